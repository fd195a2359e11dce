"""The cluster path, dry-run: cluster/sweep_array.sbatch (the Slurm job array that book/rerun.md shows) is run with
bash once per array index with a fake SLURM_ARRAY_TASK_ID, then once more with MERGE=1, on a tiny LLaVA and a tiny
sweep. Every (image, configuration) must be computed by exactly one shard, and the merged table must equal an
unsharded run's. cluster/shard.sh, the scheduler-agnostic wrapper, is checked with other index variables."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vlmflow import store as st
from vlmflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "cluster" / "sweep_array.sbatch"
SHARD = ROOT / "cluster" / "shard.sh"
N_SHARDS, N_IMAGES = 2, 3
KEY = ["image", "spec_id"]


def _sweep_args(model_dir) -> list[str]:
    return ["--model", str(model_dir), "--data", "toy-test", "--n-images", str(N_IMAGES), "--preset", "from-layer",
            "--max-new-tokens", "3", "--device", "cpu"]


def _sbatch(env_extra: dict, tmp_path) -> subprocess.CompletedProcess:
    vlmflow = Path(sys.executable).parent / "vlmflow"
    env = {**os.environ, "SLURM_SUBMIT_DIR": str(ROOT), "N_SHARDS": str(N_SHARDS), "OUT": str(tmp_path / "sweep"),
           "VLMFLOW": str(vlmflow), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.run(["bash", str(SBATCH)], env=env, capture_output=True, text=True, timeout=600)


def _table(folder) -> pd.DataFrame:
    t = st.load_results(folder)
    return t.sort_values(KEY).reset_index(drop=True)


def test_job_array_covers_every_configuration_once_and_merges_to_the_unsharded_run(model_dir, tmp_path):
    args = " ".join(_sweep_args(model_dir))
    for index in range(N_SHARDS):
        run = _sbatch({"SLURM_ARRAY_TASK_ID": str(index), "SWEEP_ARGS": args}, tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
    shards = [_table(tmp_path / "sweep" / f"shard-{i}") for i in range(N_SHARDS)]
    keys = [tuple(k) for t in shards for k in t[KEY].itertuples(index=False)]
    assert len(keys) == len(set(keys))  # no configuration computed twice
    images = [set(t["image"]) for t in shards]
    assert all(images) and not set.intersection(*images)  # each shard got its own images

    merge = _sbatch({"MERGE": "1", "SWEEP_ARGS": args}, tmp_path)
    assert merge.returncode == 0, merge.stderr[-2000:]
    merged = _table(tmp_path / "sweep" / "merged")

    ref_dir = tmp_path / "unsharded"
    assert main(["sweep", *_sweep_args(model_dir), "--quiet", "--out", str(ref_dir)]) == 0
    ref = _table(ref_dir)
    assert set(map(tuple, ref[KEY].itertuples(index=False))) == set(keys)  # every configuration, exactly once
    cols = [c for c in ref.columns if c in merged.columns and c not in ("seconds", "shard", "created")]
    pd.testing.assert_frame_equal(merged[cols], ref[cols], check_dtype=False)


def _shard(env_extra: dict, *cmd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_ARRAY_TASK_ID", "SHARD_INDEX_VAR")}
    return subprocess.run(["bash", str(SHARD), *cmd], env={**env, **env_extra}, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("var, value, base, want", [
    ("SLURM_ARRAY_TASK_ID", "2", None, 2),
    ("SGE_TASK_ID", "1", "1", 0),  # Grid Engine and LSF count from 1
    ("JOB_COMPLETION_INDEX", "3", None, 3),
])
def test_shard_wrapper_reads_any_index_variable(var, value, base, want):
    env = {var: value, "SHARD_INDEX_VAR": var, **({"SHARD_INDEX_BASE": base} if base else {})}
    run = _shard(env, "4", "echo", "--out", "r/shard-{i}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["--out", f"r/shard-{want}", "--shard", f"{want}/4"]


@pytest.mark.parametrize("env, n, words", [
    ({"SLURM_ARRAY_TASK_ID": "4"}, "4", ["index 4", "outside 0..3"]),
    ({}, "4", ["$SLURM_ARRAY_TASK_ID", "SHARD_INDEX_VAR"]),
    ({"SLURM_ARRAY_TASK_ID": "0"}, "x", ["N must be a positive integer"]),
])
def test_shard_wrapper_names_a_bad_index(env, n, words):
    run = _shard(env, n, "echo", "never")
    assert run.returncode == 2 and run.stdout == ""
    assert all(w in run.stderr for w in words), run.stderr


def test_rerun_page_shows_the_tested_template():
    page = (ROOT / "book" / "rerun.md").read_text()
    assert "```{literalinclude} ../cluster/sweep_array.sbatch" in page
    assert "cluster/shard.sh" in page
