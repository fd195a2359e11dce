"""Fixtures shared by the integration tests."""
import pytest

from tests.tiny import build


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny random LLaVA saved as a model folder (what `vlmflow sweep --model DIR` loads)."""
    folder = tmp_path_factory.mktemp("tiny_llava")
    model, processor = build("llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
