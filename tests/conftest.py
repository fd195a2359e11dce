"""Shared test set-up: CPU, deterministic, few threads (the toy-model training and other jobs share 2 cores)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("VLMFLOW_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    # train() sets torch's threads to its config's (2): without this, every later test would run on 2 threads,
    # which on a loaded machine made a 0.4 s test take 141 s
    torch.set_num_threads(threads)
