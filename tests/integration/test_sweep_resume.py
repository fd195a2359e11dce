"""Kill-and-resume: `vlmflow sweep` processes are SIGKILLed at several points and restarted; the final table equals an
uninterrupted run's, with no lost or duplicated rows and every part on disk readable after every kill."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from vlmflow import store as st
from vlmflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES = 4


def _args(model_dir, out):
    return ["sweep", "--model", str(model_dir), "--data", "toy-test", "--n-images", str(N_IMAGES), "--preset",
            "from-layer", "--max-new-tokens", "6", "--force-prefix", "1", "--out", str(out), "--quiet"]


def _spawn(model_dir, out):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "lib"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    code = "import sys; from vlmflow.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *_args(model_dir, out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _committed(out):
    return sorted(p for p in (Path(out) / "parts").glob("*.parquet")
                  if not p.name.startswith(".") and not p.name.endswith(".attention.parquet"))


def _kill_when(proc, out, n_parts, timeout=120):
    """SIGKILL ``proc`` as soon as ``n_parts`` results parts exist (or at once if n_parts == 0)."""
    deadline = time.time() + timeout
    while n_parts and len(_committed(out)) < n_parts and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_several_points_then_resume_equals_uninterrupted(model_dir, tmp_path):
    ref = tmp_path / "ref"
    assert main(_args(model_dir, ref)) == 0
    out = tmp_path / "killed"
    proc = _spawn(model_dir, out)
    time.sleep(1.0)  # during start-up (imports, model load) or the first image
    _kill_when(proc, out, 0)
    for n in (1, 3):  # right after the n-th part is committed: mid-image or mid-write of the next one
        proc = _spawn(model_dir, out)
        _kill_when(proc, out, n)
        for part in _committed(out):  # every committed part is whole
            pd.read_parquet(part)
    assert main(_args(model_dir, out)) == 0  # resume to the end
    a, b = st.load_results(ref), st.load_results(out)
    assert not b.duplicated(["image", "spec_id"]).any()
    assert len(b) == len(a) == N_IMAGES * len(set(a.spec_id))
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(st.load_results(ref, "attention"), st.load_results(out, "attention"))
    assert not list((out / "parts").glob(".tmp-*"))
