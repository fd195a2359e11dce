"""Fixtures of the book tests: a tmp copy of the book (so tests never touch the checkout's _build or book/figures),
a model folder for notebooks, trivial notebooks for pipeline tests, and the test-mode book build shared by the
build and browser tests."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "_build" / "screenshots"
# A value that must never appear in an executed notebook: the tests put it in OPENAI_API_KEY.
SENTINEL_KEY = "sk-test-vlmflow-sentinel-0123456789"


def make_notebook(path: Path, parameters: str, body: str | list[str]) -> Path:
    """Write a notebook with a cell tagged "parameters" and the given code cells."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A test notebook"), cell]
    nb.cells += [nbformat.v4.new_code_cell(b) for b in ([body] if isinstance(body, str) else body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def toy_model_ready() -> bool:
    return (REPO / "data" / "toy_model" / "config.json").is_file()


@pytest.fixture(scope="session")
def notebook_model(tmp_path_factory) -> str:
    """The `model` parameter for notebook runs: the shipped toy model when this checkout has it, else a tiny random
    LLaVA (tests/tiny/llava.py) saved to a folder, which `vf.load(folder)` reads through the same code path."""
    if toy_model_ready():
        return "toy"
    from tests.tiny import build

    model, processor = build("llava")
    folder = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def figure_overrides(tmp_path_factory) -> dict[str, dict]:
    """Parameters of single figures on top of ``{"model": notebook_model}``: a figure whose default model is a toy
    of another architecture (``toy:qwen2-vl`` for the video chapter, whose model must read clips) keeps it when
    it is shipped, and otherwise gets a tiny random toy of that architecture (``toy/architectures.py`` at the TINY
    config, toy vocabulary), exported to a folder that `vf.load(folder)` reads as it will read the shipped model."""
    from vlmflow import book
    from vlmflow.model import toy_models
    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.model import TINY
    from vlmflow.toy.train import export

    def tiny(arch: str) -> str:
        model, processor = get_arch(arch).build(TINY, seed=0)
        return str(export(model, processor, tmp_path_factory.mktemp(f"tiny_{arch}") / "model", half=False))

    shipped = {name for name, folder in toy_models().items() if (folder / "config.json").is_file()}
    out = {}
    for name, spec in book.load_registry(REPO).items():
        default = str(spec.defaults.get("model", ""))
        if default.startswith("toy:"):
            out[name] = {"model": default if default in shipped else tiny(default.removeprefix("toy:"))}
    return out


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL_KEY)
    return SENTINEL_KEY


def copy_book(dest: Path) -> Path:
    """The book's sources (config, toc, pages, notebooks, the included cluster/ files) copied to ``dest``; executed pages are not copied."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "book", dest / "book", ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    shutil.copytree(REPO / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(REPO / "cluster", dest / "cluster")  # book/rerun.md includes cluster/sweep_array.sbatch
    # What a real checkout also holds and the book must ignore (a stray page would be a "not in any toctree" warning)
    for decoy in (".pytest_cache/README.md", "lib/vlmflow.egg-info/README.md", "results/token_roles/notes.md"):
        (dest / decoy).parent.mkdir(parents=True, exist_ok=True)
        (dest / decoy).write_text("# not a book page\n")
    return dest


@pytest.fixture(scope="session")
def built_book(tmp_path_factory, notebook_model, figure_overrides):
    """The whole pipeline in test mode on a tmp copy of the book: every registered notebook with its small parameter
    set (and the test model), then the strict HTML build. Returns (root, BuildReport)."""
    from vlmflow import book

    root = copy_book(tmp_path_factory.mktemp("book"))
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = SENTINEL_KEY
    try:
        in_book = {name for name, spec in book.load_registry(root).items() if spec.in_book}
        # two notebooks at a time: the suite's other worker finishes well before this one (tests/conftest.py)
        report = book.build(root, test=True, overrides={"model": notebook_model}, progress=False, jobs=2,
                            figure_overrides={n: p for n, p in figure_overrides.items() if n in in_book})
    finally:
        if old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old
    (root / "_build" / "test-build.json").write_text(json.dumps({r.name: r.seconds for r in report.runs}))
    return root, report
