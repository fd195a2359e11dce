"""GPU check (``make gpu-check``): the GPU path in one command, on random weights of the real architectures' configs.

On CUDA, for LLaVA-1.5-7B and an InternVL and a Qwen2-VL of the paper's class (the paper's InternVL2-76B is 80 layers
at 70B width; the HF-native successors built here are InternVL3-78B-hf and Qwen2-VL-72B-Instruct), each built in code
from its published config.json values (``REAL``; no hub download; the tokenizer is the tiny test one, whose ids all lie
inside the real vocabulary) and shrunk only in its language model's layer count when the weights would take more than
``--memory-fraction`` of the GPU's memory:

  (a) oracle: knockout and recording against the eager oracle (tests/oracles.py: transformers' eager attention with a
      mask built from token ids alone) in float16 and bfloat16. vlmflow generates ``--steps`` greedy tokens under a
      knockout while recording; the oracle runs once over the same tokens (teacher forcing). Agreement: at every step
      the chosen token is the oracle's argmax up to a near-tie of ``TIE_TOL[dtype]`` logits; the recorded attention
      mass per role equals the oracle's ``output_attentions`` within ``MASS_TOL[dtype]``; and the knockout moves the
      oracle's logits more than 10x as far as vlmflow's logits lie from the oracle's (else the check is vacuous).
  (b) speed (LLaVA-1.5-7B): the paper's from-layer sweep (3 L + 1 configurations) on ``--n-images`` toy scenes with the
      batched engine against the naive loop (eager attention, ``output_attentions``, batch 1, the baseline recomputed
      for every knockout configuration) and the unbatched loop (one ``vlm.generate`` per configuration); the three ways
      are benchmarks/sweep_speed.py's. The engine runs the whole sweep; the two loops run ``--timed-configs``
      configurations per image, spread over the preset, and their time is extrapolated per configuration (stated in
      the JSON). Also the decode step time at batch 1 against the weight-bandwidth bound (bytes of the weights a
      decode step reads / the GPU's memory bandwidth from ``BANDWIDTH_GBS``, vendors' published peak figures keyed by
      device name; ``--bandwidth-gbs`` for another GPU).
  (c) memory (LLaVA-1.5-7B): extra peak GPU memory (torch.cuda.max_memory_allocated) of a recorded generation against
      a generation with ``output_attentions`` (eager), both over the same plain generation.
  (d) one figure notebook run with ``vlmflow figure NAME --device cuda`` (``vlmflow.book.figure``; toy model unless
      ``--figure-model``), with the registry's small test parameters.

It writes a JSON of its figures (``--out``, atomically) and prints one line of ratios last. Targets (H100/H200 class):
``speedup_vs_naive >= 50``, ``decode_vs_bound <= 2``, ``record_memory_ratio <= 0.01``: each printed as met / not met.

``--smoke``: the same code on CPU with the tiny models of tests/tiny, a few steps, float32 and bfloat16; the memory
measure is then the bytes that the recording and ``output_attentions`` keep (no CUDA peak) and the figure is skipped.
tests/integration/test_gpu_check.py runs it in ``make test``.

    .venv-gpu/bin/python benchmarks/gpu_check.py [--out results/gpu_check.json]       # make gpu-check
    .venv/bin/python benchmarks/gpu_check.py --smoke --out /tmp/gpu_check.json        # CPU, ~20 s
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lib"), str(ROOT), str(ROOT / "benchmarks")]

import sweep_speed as ways  # noqa: E402  (the three ways of running a sweep, shared with sweep_speed.py)

QUESTION = "describe the image"

# Published config.json values, as keyword overrides of the tiny builders in tests/tiny (text config keys plain,
# vision keys with a vision_ prefix). Layer counts are the published ones; --max-layers / memory may lower the text one.
REAL = {
    "llava": {
        "source": "llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14-336 + Vicuna-7B v1.5)",
        "build": dict(image_size=336, patch_size=14, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096,
                      rms_norm_eps=1e-5, vision_hidden_size=1024, vision_intermediate_size=4096,
                      vision_num_hidden_layers=24, vision_num_attention_heads=16, vision_projection_dim=768,
                      vision_hidden_act="quick_gelu"),
        "vision_layers_key": "vision_num_hidden_layers",
    },
    "internvl": {
        "source": "OpenGVLab/InternVL3-78B-hf (InternViT-6B-448px-V2.5 + Qwen2.5-72B)",
        "build": dict(tile_size=448, patch_size=14, max_patches=12, hidden_size=8192, intermediate_size=29568,
                      num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8, vocab_size=151674,
                      max_position_embeddings=32768, rms_norm_eps=1e-6,
                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                      vision_hidden_size=3200, vision_intermediate_size=12800, vision_num_hidden_layers=45,
                      vision_num_attention_heads=25, vision_use_qk_norm=True, vision_norm_type="rms_norm",
                      vision_layer_norm_eps=1e-6),
        "vision_layers_key": "vision_num_hidden_layers",
    },
    "qwen2_vl": {
        "source": "Qwen/Qwen2-VL-72B-Instruct",
        "build": dict(hidden_size=8192, intermediate_size=29568, num_hidden_layers=80, num_attention_heads=64,
                      num_key_value_heads=8, vocab_size=152064, max_position_embeddings=32768, rms_norm_eps=1e-6,
                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
                      vision_depth=32, vision_embed_dim=1280, vision_hidden_size=8192, vision_num_heads=16,
                      vision_mlp_ratio=4, vision_patch_size=14, vision_spatial_merge_size=2,
                      vision_temporal_patch_size=2, vision_hidden_act="quick_gelu"),
        "vision_layers_key": "vision_depth",
        # Qwen2-VL's preprocessor_config: min_pixels 56*56, max_pixels 28*28*1280
        "image_processor_size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280},
    },
}

# Stated before measuring. TIE_TOL: a step agrees when the chosen token's oracle logit is within this of the oracle's
# best (logit units; half precision rounds differently in sdpa and eager kernels). MASS_TOL: max |recorded - oracle|
# attention mass per role (masses lie in [0, 1]).
TIE_TOL = {"float32": 1e-4, "float16": 0.05, "bfloat16": 0.25}
MASS_TOL = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 2e-2}

# Peak memory bandwidth in GB/s as published by NVIDIA for each product (not measured here); matched in order against
# torch.cuda.get_device_name(): every listed substring must occur.
BANDWIDTH_GBS = [
    (("GH200", "144G"), 4900, "GH200 144 GB HBM3e (4.9 TB/s)"),  # before H200: "GH200" contains "H200"
    (("GH200",), 4000, "GH200 96 GB HBM3 (4.0 TB/s)"),
    (("H200",), 4800, "H200 (HBM3e, 4.8 TB/s)"),
    (("H100", "NVL"), 3900, "H100 NVL (3.9 TB/s)"),
    (("H100", "PCIe"), 2000, "H100 PCIe (2.0 TB/s)"),
    (("H100",), 3350, "H100 SXM (3.35 TB/s)"),
    (("B200",), 8000, "B200 (8 TB/s)"),
    (("A100", "80GB", "PCIe"), 1935, "A100 80GB PCIe (1.935 TB/s)"),
    (("A100", "80GB"), 2039, "A100 80GB SXM (2.039 TB/s)"),
    (("A100",), 1555, "A100 40GB (1.555 TB/s)"),
    (("L40",), 864, "L40 / L40S (864 GB/s)"),  # before L4
    (("L4",), 300, "L4 (300 GB/s)"),
    (("A10",), 600, "A10 / A10G (600 GB/s)"),  # after A100
    (("RTX 4090",), 1008, "GeForce RTX 4090 (1.008 TB/s)"),
    (("V100",), 900, "V100 (900 GB/s)"),
]
TARGET_CLASS = ("H100", "H200", "GH200", "B200")  # where the targets below apply
TARGETS = {"speedup_vs_naive": (">=", 50.0), "decode_vs_bound": ("<=", 2.0), "record_memory_ratio": ("<=", 0.01)}


# ------------------------------------------------------------------------------------------------------ building
def bandwidth_for(device_name: str) -> tuple[float | None, str | None]:
    for needles, gbs, label in BANDWIDTH_GBS:
        if all(n in device_name for n in needles):
            return float(gbs), label
    return None, None


def _build(arch: str, overrides: dict):
    from tests.tiny import build

    return build(arch, **overrides)


def text_layers_that_fit(arch: str, budget_bytes: float, dtype_bytes: int, overrides: dict) -> tuple[int, int]:
    """(layers to build, published layers): the most text layers whose weights fit ``budget_bytes`` (counted on the
    meta device: nothing is allocated)."""
    import torch

    published = overrides["num_hidden_layers"]
    with torch.device("meta"):
        model, _ = _build(arch, {**overrides, "num_hidden_layers": 1})
    layer = sum(p.numel() for p in _text_layers(model)[0].parameters())
    fixed = sum(p.numel() for p in model.parameters()) - layer
    fit = int((budget_bytes / dtype_bytes - fixed) // layer)
    if fit < 1:
        raise SystemExit(f"{arch}: the {fixed * dtype_bytes / 2**30:.1f} GiB outside the text layers do not fit "
                         f"the memory budget ({budget_bytes / 2**30:.1f} GiB); raise --memory-fraction")
    return min(published, fit), published


def _text_layers(model):
    inner = getattr(model, "model", model)
    return inner.language_model.layers


def build_model(arch: str, smoke: bool, device, dtype, args) -> tuple[object, dict]:
    """(VLM, description): tiny test model (smoke) or the real config with random weights, built on ``device``."""
    import torch

    import vlmflow as vf

    info = {"arch": arch}
    if smoke:
        model, processor = _build(arch, {})
        info.update(source=f"tests/tiny ({arch})")
    else:
        spec = REAL[arch]
        overrides = dict(spec["build"])
        if args.vision_layers:
            overrides[spec["vision_layers_key"]] = args.vision_layers
        total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 16 * 2**30
        layers, published = text_layers_that_fit(arch, args.memory_fraction * total,
                                                 torch.tensor([], dtype=dtype).element_size(), overrides)
        if args.max_layers:
            layers = min(layers, args.max_layers)
        overrides["num_hidden_layers"] = layers
        info.update(source=spec["source"], layers_published=published,
                    vision_layers=overrides.get(spec["vision_layers_key"]),
                    shrunk_for_debug=bool(args.max_layers or args.vision_layers))
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model, processor = _build(arch, overrides)
        finally:
            torch.set_default_dtype(default)
        if spec.get("image_processor_size"):
            processor.image_processor.size = dict(spec["image_processor_size"])
    model = model.to(device=device, dtype=dtype).eval()
    vlm = vf.wrap(model, processor, name=info["source"])
    info.update(layers=vlm.num_layers, parameters=sum(p.numel() for p in model.parameters()))
    return vlm, info


def images(n: int, smoke: bool):
    from vlmflow.toy.scenes import make_scene

    size = 64 if smoke else 448
    return [make_scene(0, "test", i).image.resize((size, size)) for i in range(n)]


# ------------------------------------------------------------------------------------------------------ (a) oracle
def oracle_check(vlm, image, steps: int, dtype_name: str) -> dict:
    """Knockout + recording of vlmflow's cached greedy generation against the eager oracle over the same tokens."""
    import torch

    import vlmflow as vf
    from tests.oracles import ORACLE, eager_forward, extend, oracle_masks

    n = vlm.num_layers
    late = list(range(n // 2, n))  # image hidden from the generated tokens everywhere, from the text in the late half
    ko = [vf.Knockout("image", "generated"), vf.Knockout("image", "text", layers=late)]
    pairs = [("image", "generated", None), ("image", "text", late)]
    batch = vlm.prepare([image], QUESTION)
    P, img_id = batch.prompt_length, vlm.adapter.image_token_id
    eos = vlm.model.generation_config.eos_token_id
    banned = [img_id] + (eos if isinstance(eos, list) else [eos])  # no image placeholder, no early end
    gen = vlm.generate_batch(batch, knockout=ko, record=vf.Record(rows="generated", layers=None, heads="mean"),
                             max_new_tokens=steps, min_new_tokens=steps, suppress_tokens=[img_id],
                             return_logits=True)[0]
    tokens = gen.token_ids
    inputs = extend(dict(batch.inputs), torch.tensor([tokens[:-1]], device=vlm.device))
    ids = inputs["input_ids"]
    masks = oracle_masks(ids, inputs["attention_mask"], img_id, P, pairs, n)
    vlm.model.set_attn_implementation({"text_config": ORACLE})
    try:
        out = eager_forward(vlm.model, inputs, masks)
        base_logits = eager_forward(vlm.model, inputs, {}).logits[0, P - 1:].float()
    finally:
        vlm.adapter.set_attention("vlmflow")
    logits = out.logits[0, P - 1:].float().clone()  # [steps, vocab]: the oracle's logits for each chosen token
    logits[:, banned] = float("-inf")
    chosen = logits.gather(1, torch.tensor(tokens, device=logits.device)[:, None])[:, 0]
    margin = logits.max(-1).values - chosen  # 0 where the oracle chose the same token
    ours = gen.logits.float().to(logits.device)
    finite = torch.isfinite(logits)
    max_logit_diff = float((ours - logits).abs()[finite].max())
    ko_effect = float((base_logits - out.logits[0, P - 1:].float())[finite].abs().max())

    rec = gen.record
    rows = rec.row_positions.to(ids.device)
    names = [r for r in vf.ROLES if r != "pad"]
    role_masks = {r: batch.roles.mask(r, length=ids.shape[1])[0].to(ids.device) for r in names}
    mass_diff = 0.0
    for li, layer in enumerate(rec.layers):
        att = out.attentions[layer][0].float().mean(0)[rows]  # [R, T], head mean
        for name in names:
            want = att[:, role_masks[name]].sum(-1)
            got = rec.role_mass[:, li, vf.ROLES.index(name)].float().to(want.device)
            mass_diff = max(mass_diff, float((got - want).abs().max()))
    tie, mtol = TIE_TOL[dtype_name], MASS_TOL[dtype_name]
    res = {
        "dtype": dtype_name, "steps": steps, "prompt_length": P, "image_tokens": int((ids[0] == img_id).sum()),
        "distinct_tokens": len(set(tokens)),
        "tokens_equal_oracle_argmax": int((margin == 0).sum()), "steps_within_tie_tol": int((margin <= tie).sum()),
        "tie_tol": tie, "max_logit_diff": max_logit_diff, "knockout_effect_on_logits": ko_effect,
        "attention_mass_max_diff": mass_diff, "mass_tol": mtol, "recorded_rows": int(len(rows)),
    }
    res["tokens_agree"] = res["steps_within_tie_tol"] == steps
    res["attention_mass_ok"] = mass_diff <= mtol
    # not vacuous: had vlmflow skipped the knockout, its logits would be off by about ko_effect
    res["knockout_not_vacuous"] = ko_effect > 10 * max_logit_diff
    res["ok"] = res["tokens_agree"] and res["attention_mass_ok"] and res["knockout_not_vacuous"]
    return res


# ------------------------------------------------------------------------------------------------------ (b) speed
def spread(n_configs: int, k: int) -> list[int]:
    """k configuration indices spread evenly over the preset (always the baseline, index 0)."""
    if k <= 0 or k >= n_configs:
        return list(range(n_configs))
    return sorted({round(i * (n_configs - 1) / (k - 1)) for i in range(k)} if k > 1 else {0})


def speed(vlm, imgs, max_new_tokens: int, timed_configs: int, batch_size: int) -> dict:
    from vlmflow.presets import preset
    from vlmflow.sweep import SweepEngine

    device = vlm.device
    configs = preset("from-layer", vlm.num_layers, record=None)
    n_total = len(configs) * len(imgs)
    subset = [(i, c) for i in range(len(imgs)) for c in spread(len(configs), timed_configs)]
    warm = [configs[0], configs[-1]]
    engine = SweepEngine(vlm, max_new_tokens=max_new_tokens, batch_size=batch_size)
    engine.run(imgs[0], warm, QUESTION)  # untimed warm-ups, every way
    ways.unbatched_pass(vlm, imgs[:1], warm, QUESTION, max_new_tokens)
    ways.naive_pass(vlm, imgs[:1], warm, QUESTION, max_new_tokens)
    tok_c, t_c = ways.timed(lambda: ways.engine_pass(engine, imgs, configs, QUESTION), device)
    tok_b, t_b = ways.timed(lambda: ways.unbatched_pass(vlm, imgs, configs, QUESTION, max_new_tokens, subset), device)
    tok_a, t_a = ways.timed(lambda: ways.naive_pass(vlm, imgs, configs, QUESTION, max_new_tokens, subset,
                                                    baseline_per_config=True), device)
    est_b, est_a = t_b / len(subset) * n_total, t_a / len(subset) * n_total
    return {
        "preset": "from-layer", "n_images": len(imgs), "n_configs": len(configs), "configurations": n_total,
        "max_new_tokens": max_new_tokens, "batch_size": batch_size, "timed_loop_configurations": len(subset),
        "loops_extrapolated": len(subset) < n_total, "engine_s": t_c, "unbatched_s": est_b, "naive_s": est_a,
        "naive_baseline_recomputed_per_configuration": True,
        "same_tokens_engine_vs_unbatched": sum(tok_b[k] == tok_c[k] for k in subset),
        "same_tokens_engine_vs_naive": sum(tok_a[k] == tok_c[k] for k in subset),
        "speedup_vs_naive": est_a / t_c, "speedup_vs_unbatched": est_b / t_c,
    }


def decode_weight_bytes(vlm) -> int:
    """Bytes of the weights one decode step reads: the text layers, final norm and output head (not the vision tower,
    not the embedding table, of which a step reads one row)."""
    lm = vlm.adapter.language_model()
    head = vlm.model.get_output_embeddings()
    params = {id(p): p for name, p in lm.named_parameters() if "embed_tokens" not in name}
    params.update({id(p): p for p in head.parameters()})
    return sum(p.numel() * p.element_size() for p in params.values())


def decode(vlm, image, steps: int, bandwidth_gbs: float | None, bandwidth_source: str | None) -> dict:
    """Decode step time at batch 1 (vlmflow attention, no knockout): (time of ``steps`` tokens - time of 1) /
    (steps - 1), best of 3, against weight bytes / bandwidth."""
    def run(k):
        return vlm.generate(image, QUESTION, max_new_tokens=k, min_new_tokens=k)

    run(steps)  # warm-up
    full = min(ways.timed(lambda: run(steps), vlm.device)[1] for _ in range(3))
    first = min(ways.timed(lambda: run(1), vlm.device)[1] for _ in range(3))
    step = max(full - first, 0.0) / (steps - 1)
    nbytes = decode_weight_bytes(vlm)
    bound = nbytes / (bandwidth_gbs * 1e9) if bandwidth_gbs else None
    return {"step_s": step, "weight_bytes": nbytes, "bandwidth_gbs": bandwidth_gbs,
            "bandwidth_source": bandwidth_source, "bound_s": bound,
            "decode_vs_bound": step / bound if bound else None}


# ------------------------------------------------------------------------------------------------------ (c) memory
def memory(vlm, image, steps: int) -> dict:
    """Recording (role masses + image maps, head mean, every layer, every generated row) against eager
    ``output_attentions`` over the same greedy generation: extra CUDA peak over a plain generation, and the bytes each
    keeps."""
    import torch

    import vlmflow as vf

    cuda = vlm.device.type == "cuda"
    batch = vlm.prepare([image], QUESTION)
    kw = dict(max_new_tokens=steps, min_new_tokens=steps, suppress_tokens=[vlm.adapter.image_token_id])

    def peak(fn):
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(vlm.device)
            start = torch.cuda.memory_allocated(vlm.device)
        out = fn()
        return out, (torch.cuda.max_memory_allocated(vlm.device) - start if cuda else None)

    _, plain = peak(lambda: vlm.generate_batch(batch, **kw))
    gen, rec_peak = peak(lambda: vlm.generate_batch(batch, record=vf.Record(rows="generated"), **kw)[0])
    rec = gen.record
    rec_bytes = sum(t.numel() * t.element_size() for t in (rec.role_mass, rec.key_share, rec.image_map))
    del gen, rec
    vlm.model.set_attn_implementation({"text_config": "eager"})
    try:
        def eager_attentions():
            with torch.no_grad():
                return vlm.model.generate(**batch.inputs, do_sample=False, output_attentions=True,
                                          return_dict_in_generate=True, pad_token_id=vlm.tokenizer.pad_token_id, **kw)
        out, oa_peak = peak(eager_attentions)
        oa_bytes = sum(a.numel() * a.element_size() for step in out.attentions for a in step)
        del out
    finally:
        vlm.adapter.set_attention("vlmflow")
    if cuda:
        rec_extra, oa_extra = max(rec_peak - plain, 0), max(oa_peak - plain, 1)
        ratio, measure = rec_extra / oa_extra, "extra CUDA peak over a plain generation (max_memory_allocated)"
    else:
        rec_extra = oa_extra = None
        ratio, measure = rec_bytes / oa_bytes, "bytes kept (no CUDA peak on this device)"
    return {"measure": measure, "steps": steps, "record_extra_peak_bytes": rec_extra,
            "output_attentions_extra_peak_bytes": oa_extra, "record_bytes": rec_bytes,
            "output_attentions_bytes": oa_bytes, "record_memory_ratio": ratio}


# ------------------------------------------------------------------------------------------------------ (d) figure
def figure(name: str, model: str, device: str, out: Path) -> dict:
    from vlmflow import book

    spec = book.load_registry(ROOT)[name]
    params = {k: v for k, v in spec.test.items()}
    res = book.figure(name, model=model, device=device, params=params, out=out, root=ROOT)
    return {"name": name, "model": model, "device": device, "parameters": params, "seconds": res.seconds,
            "executed_notebook": str(res.output), "ok": True}


# ------------------------------------------------------------------------------------------------------ driver
def verdict(key: str, value) -> str:
    op, target = TARGETS[key]
    if value is None:
        return "unknown"
    return "met" if (value >= target if op == ">=" else value <= target) else "not met"


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU smoke mode: tiny test models, a few steps")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    ap.add_argument("--dtypes", default=None, help="default: float16,bfloat16 (float32,bfloat16 with --smoke)")
    ap.add_argument("--archs", default="llava,internvl,qwen2_vl")
    ap.add_argument("--steps", type=int, default=None, help="greedy steps of the oracle check (32; smoke 4)")
    ap.add_argument("--n-images", type=int, default=None, help="images of the timed sweep (8; smoke 2)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="tokens per sweep configuration (32; smoke 4)")
    ap.add_argument("--timed-configs", type=int, default=None,
                    help="configurations per image timed for the two loops (8; smoke: all); the engine runs all")
    ap.add_argument("--batch-size", type=int, default=64, help="sweep engine rows decoded together")
    ap.add_argument("--memory-fraction", type=float, default=0.45,
                    help="share of GPU memory the weights may take; the text layer count shrinks to fit")
    ap.add_argument("--max-layers", type=int, default=0, help="debug only: cap the text layers (marked in the JSON)")
    ap.add_argument("--vision-layers", type=int, default=0, help="debug only: cap the vision layers (marked)")
    ap.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth if the GPU is not in the table")
    ap.add_argument("--figure", default="token_roles", help="figure notebook of part (d)")
    ap.add_argument("--figure-model", default="toy", help="model of part (d): toy or a model in the HF cache")
    ap.add_argument("--skip-figure", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="JSON of the figures (default results/gpu_check[_smoke].json)")
    args = ap.parse_args(argv)

    import torch

    smoke = args.smoke
    device = torch.device(args.device or ("cpu" if smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda}): this check needs a GPU "
              f"and a CUDA torch (make gpu-install); on a CPU run it with --smoke", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    dtypes = (args.dtypes or ("float32,bfloat16" if smoke else "float16,bfloat16")).split(",")
    steps = args.steps or (4 if smoke else 32)
    n_images = args.n_images or (2 if smoke else 8)
    max_new = args.max_new_tokens or (4 if smoke else 32)
    timed_configs = args.timed_configs if args.timed_configs is not None else (0 if smoke else 8)
    out_path = Path(args.out or ROOT / "results" / ("gpu_check_smoke.json" if smoke else "gpu_check.json"))
    archs = args.archs.split(",")
    unknown = [a for a in archs if a not in REAL]
    if unknown:
        raise SystemExit(f"unknown architecture(s) {unknown}; known: {', '.join(REAL)}")

    import transformers

    import vlmflow

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    bw, bw_source = (args.bandwidth_gbs, "--bandwidth-gbs") if args.bandwidth_gbs else bandwidth_for(name)
    report = {
        "mode": "smoke" if smoke else "gpu", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "device": str(device), "device_name": name,
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                     "vlmflow": vlmflow.__version__},
        "tolerances": {"tie_tol_logits": TIE_TOL, "attention_mass": MASS_TOL},
        "targets_apply": device.type == "cuda" and any(k in name for k in TARGET_CLASS),
        "oracle": [], "models": {},
    }
    t_start = time.perf_counter()
    for arch in archs:
        first = torch.float32 if dtypes[0] == "float32" else getattr(torch, dtypes[0])
        vlm, info = build_model(arch, smoke, device, first, args)
        report["models"][arch] = info
        of = "" if smoke else f" of {info['layers_published']}"
        print(f"[{arch}] {info['source']}: {info['layers']} text layers{of}, {info['parameters'] / 1e9:.2f} B parameters",
              flush=True)
        image = images(1, smoke)[0]
        for i, dt in enumerate(dtypes):
            if i:
                vlm.model.to(getattr(torch, dt))
            res = {"arch": arch, **oracle_check(vlm, image, steps, dt)}
            report["oracle"].append(res)
            write_json(out_path, report)  # every part is kept as soon as it is measured
            print(f"  (a) {dt}: tokens {res['steps_within_tie_tol']}/{steps} within {res['tie_tol']} logits "
                  f"({res['tokens_equal_oracle_argmax']} exact), attention mass diff "
                  f"{res['attention_mass_max_diff']:.2e} (tol {res['mass_tol']}), knockout effect "
                  f"{res['knockout_effect_on_logits']:.2f}: {'ok' if res['ok'] else 'FAILED'}", flush=True)
            if arch == archs[0] and i == 0:  # (b), (c) on the first architecture (LLaVA-1.5-7B) in the first dtype
                report["sweep"] = {"arch": arch, "dtype": dt,
                                   **speed(vlm, images(n_images, smoke), max_new, timed_configs, args.batch_size)}
                s = report["sweep"]
                print(f"  (b) sweep {s['configurations']} configurations: engine {s['engine_s']:.1f} s, unbatched "
                      f"{s['unbatched_s']:.1f} s, naive {s['naive_s']:.1f} s"
                      f"{' (loops extrapolated from {})'.format(s['timed_loop_configurations']) if s['loops_extrapolated'] else ''}",
                      flush=True)
                report["decode"] = {"arch": arch, "dtype": dt, **decode(vlm, image, max(steps, 16), bw, bw_source)}
                d = report["decode"]
                print(f"  (b) decode step {d['step_s'] * 1e3:.2f} ms; bound {d['bound_s'] and d['bound_s'] * 1e3}"
                      f" ms ({d['weight_bytes'] / 2**30:.2f} GiB / {bw_source or 'unknown bandwidth'})", flush=True)
                report["memory"] = {"arch": arch, "dtype": dt, **memory(vlm, image, steps)}
                m = report["memory"]
                print(f"  (c) recording / output_attentions = {m['record_memory_ratio']:.4%} ({m['measure']})",
                      flush=True)
                write_json(out_path, report)
        del vlm
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if args.skip_figure or smoke:
        report["figure"] = {"skipped": "smoke mode" if smoke else "--skip-figure"}
    else:
        try:
            report["figure"] = figure(args.figure, args.figure_model, str(device),
                                      out_path.parent / "gpu_check_figure" / args.figure)
            print(f"  (d) {args.figure} on {args.figure_model}, {device}: {report['figure']['seconds']:.1f} s",
                  flush=True)
        except Exception as exc:  # noqa: BLE001  (the other figures are kept; the failure is reported)
            report["figure"] = {"name": args.figure, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            print(f"  (d) {args.figure} FAILED: {report['figure']['error']}", file=sys.stderr, flush=True)

    ratios = {"speedup_vs_naive": report["sweep"]["speedup_vs_naive"],
              "speedup_vs_unbatched": report["sweep"]["speedup_vs_unbatched"],
              "decode_vs_bound": report["decode"]["decode_vs_bound"],
              "record_memory_ratio": report["memory"]["record_memory_ratio"]}
    report["ratios"] = ratios
    report["targets"] = {k: verdict(k, ratios[k]) for k in TARGETS}
    n_ok = sum(r["ok"] for r in report["oracle"])
    report["oracle_ok"] = f"{n_ok}/{len(report['oracle'])}"
    report["seconds"] = time.perf_counter() - t_start
    write_json(out_path, report)
    where = "" if report["targets_apply"] else " (targets are for H100/H200-class GPUs: informative here)"
    for key, (op, target) in TARGETS.items():
        print(f"target {key} {op} {target}: {report['targets'][key]}{where}")
    print(f"figures: {out_path}")
    fmt = lambda v: "n/a" if v is None else f"{v:.4g}"  # noqa: E731
    print(" ".join(f"{k}={fmt(v)}" for k, v in ratios.items()) + f" oracle_ok={report['oracle_ok']}")
    return 0 if n_ok == len(report["oracle"]) and report["figure"].get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
