"""Shared test set-up: CPU, deterministic, few threads (the toy-model training and other jobs share 2 cores), and
the grouping of tests onto pytest-xdist workers (``make test`` runs ``-n 2 --dist loadfile``: one worker per core)."""
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


# Test files whose tests share one session fixture that is costly to build: one worker runs them all, so it is built
# once (the test-mode book build, tests/book/conftest.py ``built_book``: about four minutes).
SAME_WORKER = {"tests/book/test_build.py", "tests/book/test_browser.py", "tests/book/test_notebooks.py"}


def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs ``-n 2 --dist loadfile``: each test file whole on one worker (its module fixtures built
    once), and the files of ``SAME_WORKER`` together. (xdist's ``loadgroup`` marks do not group under pytest 9, which
    no longer reads the node id that xdist rewrites.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixtureFiles(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "book-build" if scope in SAME_WORKER else scope

    return SharedFixtureFiles(config, log)
