"""``benchmarks/gpu_check.py --smoke``: the GPU check's code path on CPU with the tiny models, so it cannot rot.

The smoke run must write a JSON with every figure, agree with the eager oracle for every architecture in float32 and
bfloat16, give the engine the same tokens as the unbatched loop on every configuration (float32, all timed), keep
the recording far smaller than ``output_attentions``, and print the ratios of its JSON as its last line. A negative
control shows that the oracle check fails when vlmflow's knockout is dropped. No time is asserted."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
KEYS = {"mode", "date", "device", "device_name", "versions", "tolerances", "targets_apply", "oracle", "models",
        "sweep", "decode", "memory", "figure", "ratios", "targets", "oracle_ok", "seconds"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "smoke.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(out.read_text()), run.stdout


def test_smoke_json_has_every_figure(smoke):
    report, _ = smoke
    assert KEYS <= set(report), KEYS - set(report)
    assert report["mode"] == "smoke" and report["device"] == "cpu"
    assert set(report["targets"]) == {"speedup_vs_naive", "decode_vs_bound", "record_memory_ratio"}
    assert report["figure"] == {"skipped": "smoke mode"}


def test_smoke_oracle_agrees_for_every_architecture_and_dtype(smoke):
    report, _ = smoke
    seen = {(r["arch"], r["dtype"]) for r in report["oracle"]}
    assert seen == {(a, d) for a in ("llava", "internvl", "qwen2_vl") for d in ("float32", "bfloat16")}
    for r in report["oracle"]:
        assert r["ok"] and r["tokens_agree"] and r["attention_mass_ok"] and r["knockout_not_vacuous"], r
        assert r["image_tokens"] > 0 and r["recorded_rows"] == r["steps"] - 1
    assert report["oracle_ok"] == "6/6"


def test_smoke_sweep_ratios_and_memory(smoke):
    report, stdout = smoke
    s = report["sweep"]
    assert s["configurations"] == s["n_images"] * s["n_configs"] == s["timed_loop_configurations"]
    assert not s["loops_extrapolated"]
    assert s["same_tokens_engine_vs_unbatched"] == s["configurations"]  # float32: the engine is exact
    assert s["same_tokens_engine_vs_naive"] == s["configurations"]
    for key in ("speedup_vs_naive", "speedup_vs_unbatched"):
        assert report["ratios"][key] > 0
    d = report["decode"]
    assert d["step_s"] >= 0 and d["decode_vs_bound"] is None  # no bandwidth known for a CPU
    # the bytes a decode step reads: everything but the vision tower, the projector and the embedding table
    from tests.tiny import build

    model, _ = build("llava")
    skip = ("vision_tower", "multi_modal_projector", "embed_tokens")
    assert d["weight_bytes"] == sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                                    if not any(s in n for s in skip))
    m = report["memory"]
    assert 0 < m["record_bytes"] < m["output_attentions_bytes"]
    assert report["ratios"]["record_memory_ratio"] == pytest.approx(m["record_bytes"] / m["output_attentions_bytes"])
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("speedup_vs_naive=") and last.endswith("oracle_ok=6/6")
    assert f"record_memory_ratio={report['ratios']['record_memory_ratio']:.4g}" in last


def test_oracle_check_fails_when_the_knockout_is_dropped():
    """Negative control: vlmflow generating without its knockout must not pass as agreeing with the oracle."""
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    import torch

    vlm, _ = gpu_check.build_model("llava", True, torch.device("cpu"), torch.float32, None)
    image = gpu_check.images(1, True)[0]
    assert gpu_check.oracle_check(vlm, image, 4, "float32")["ok"]
    honest = vlm.generate_batch
    vlm.generate_batch = lambda batch, knockout=None, **kw: honest(batch, knockout=None, **kw)
    res = gpu_check.oracle_check(vlm, image, 4, "float32")
    assert not res["ok"] and not res["knockout_not_vacuous"], res


def test_bandwidth_table_matches_device_names():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.bandwidth_for("NVIDIA H200")[0] == 4800
    assert gpu_check.bandwidth_for("NVIDIA H100 80GB HBM3")[0] == 3350
    assert gpu_check.bandwidth_for("NVIDIA H100 PCIe")[0] == 2000
    assert gpu_check.bandwidth_for("NVIDIA A100-SXM4-80GB")[0] == 2039
    assert gpu_check.bandwidth_for("NVIDIA A100 80GB PCIe")[0] == 1935
    assert gpu_check.bandwidth_for("NVIDIA GH200 480GB")[0] == 4000
    assert gpu_check.bandwidth_for("NVIDIA L40")[0] == 864 and gpu_check.bandwidth_for("NVIDIA L4")[0] == 300
    assert gpu_check.bandwidth_for("NVIDIA A10G")[0] == 600
    assert gpu_check.bandwidth_for("some other accelerator") == (None, None)
    assert gpu_check.spread(97, 8)[0] == 0 and len(gpu_check.spread(97, 8)) == 8 and gpu_check.spread(13, 0) == \
        list(range(13))
