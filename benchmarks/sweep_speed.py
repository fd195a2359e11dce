"""Sweep speed: the same knockout sweep run three ways, checked for identical texts, timed in one process.

  (a) naive, as the official code: one ``model.generate`` per configuration at batch 1, eager attention with
      ``output_attentions=True``; the knockout is an explicit 4D mask built per attention call with a Python loop over
      the target rows (the official code's masking), applied only in the knocked-out layers;
  (b) one ``vlm.generate`` per configuration with the project's attention function (sdpa + role tables);
  (c) the sweep engine (``vlmflow.sweep.SweepEngine.run_many``): shared prefix cache per image, rows of several
      images batched together in the suffix and decoding, preallocated KV buffers, rows dropped as they finish.

Fairness: each way first runs one untimed warm-up (first image, baseline + one knockout) so that one-time costs
(lazy imports, first allocations) fall on none of them; the timed passes run with no tracing; the engine's memory is
measured in a separate, untimed pass (tracemalloc slows Python-heavy code several-fold).

Data: the first N toy test scenes x the from-layer preset (the three knockout types at every starting layer plus the
baseline: 3 L + 1 configurations). Model: the trained toy model when ``data/toy_model`` exists, else an untrained
toy LLaVA of the same architecture (``vlmflow.toy.model.build()``: 8 layers, 64 image tokens).

    .venv/bin/python benchmarks/sweep_speed.py [--n-images 10] [--max-new-tokens 32] [--threads 1]

The last line is ``speedup_vs_naive=X.X speedup_vs_unbatched=Y.Y`` (configurations per second, ratios).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

NAIVE = "vlmflow_bench_naive_eager"
_NAIVE_STATE: dict = {}


def naive_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Eager attention (full weights, returned for output_attentions) + the official-style knockout mask."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv

    B, H, Q, D = query.shape
    K = key.shape[2]
    n_rep = H // key.shape[1]
    key, value = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    scores = (query @ key.transpose(2, 3)) * (scaling if scaling is not None else D ** -0.5)
    mask = torch.zeros(B, 1, Q, K, dtype=scores.dtype, device=scores.device)
    causal = torch.arange(K, device=scores.device)[None, :] > torch.arange(K - Q, K, device=scores.device)[:, None]
    mask[:, :, causal] = torch.finfo(scores.dtype).min
    st = _NAIVE_STATE
    if module.layer_idx in st.get("layers", ()):
        P, src, tgt = st["prompt_length"], st["source_cols"], st["target_roles"]
        for qi in range(Q):  # the official code's row loop
            pos = K - Q + qi
            role = "generated" if pos >= P else st["roles"][pos]
            if role in tgt:
                mask[:, :, qi, src] = torch.finfo(scores.dtype).min
    weights = (scores.float() + mask.float()).softmax(-1).to(value.dtype)
    out = (weights @ value).transpose(1, 2).contiguous()
    return out, weights


def run_naive(model, batch, knockouts, max_new_tokens, pad):
    """One ``model.generate`` at batch 1 under the naive attention (must be set: ``use_naive``) -> new token ids."""
    import torch

    from vlmflow.roles import ROLES

    roles = [ROLES[i] for i in batch.roles.ids[0].tolist()]
    st = _NAIVE_STATE
    st.clear()
    st.update(prompt_length=len(roles), roles=roles)
    if knockouts:
        (ko,) = knockouts
        st.update(layers=set(ko.layer_indices(model.config.text_config.num_hidden_layers)),
                  source_cols=[i for i, r in enumerate(roles) if r in ko.source_roles],
                  target_roles=ko.target_roles)
    with torch.no_grad():
        out = model.generate(**batch.inputs, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad,
                             output_attentions=True, return_dict_in_generate=True)
    return out.sequences[0, batch.prompt_length:].tolist()


def use_naive(model) -> None:
    """Switch the model's text attention to the naive eager attention (``vlm.adapter.set_attention("vlmflow")``
    switches back)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAIVE, naive_attention)
    AttentionMaskInterface.register(NAIVE, eager_mask)
    model.set_attn_implementation({"text_config": NAIVE})


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    """(fn(), seconds), with the device synchronised on both sides."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _pairs(n_images: int, n_configs: int, pairs):
    return [(i, c) for i in range(n_images) for c in range(n_configs)] if pairs is None else list(pairs)


def unbatched_pass(vlm, images, configs, question, max_new_tokens, pairs=None) -> dict:
    """Way (b): one ``vlm.generate`` per (image, configuration) -> {(image, config): token ids}."""
    return {(i, c): vlm.generate(images[i], question, knockout=list(configs[c].knockouts) or None,
                                 max_new_tokens=max_new_tokens).token_ids
            for i, c in _pairs(len(images), len(configs), pairs)}


def naive_pass(vlm, images, configs, question, max_new_tokens, pairs=None, baseline_per_config=False) -> dict:
    """Way (a): one naive ``generate`` per (image, configuration), cut at end-of-sequence -> {(image, config): ids}.
    ``baseline_per_config``: also regenerate the baseline for every knockout configuration (not shared)."""
    model = vlm.model
    eos = model.generation_config.eos_token_id
    eos_ids = eos if isinstance(eos, list) else [eos]
    pad = model.generation_config.pad_token_id if model.generation_config.pad_token_id is not None else eos_ids[0]
    use_naive(model)
    try:
        out, batches = {}, {}
        for i, c in _pairs(len(images), len(configs), pairs):
            batch = batches.setdefault(i, vlm.prepare([images[i]], question))
            if baseline_per_config and configs[c].knockouts:
                run_naive(model, batch, (), max_new_tokens, pad)
            ids = run_naive(model, batch, configs[c].knockouts, max_new_tokens, pad)
            out[i, c] = ids[:next((k for k, t in enumerate(ids) if t in eos_ids), len(ids))]
        return out
    finally:
        vlm.adapter.set_attention("vlmflow")


def engine_pass(engine, images, configs, question) -> dict:
    """Way (c): the sweep engine over every image and configuration -> {(image, config): token ids}."""
    res = engine.run_many(images, configs, question)
    return {(i, c): r.token_ids for i, row in enumerate(res) for c, r in enumerate(row)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    import torch

    import vlmflow as vf
    from vlmflow.model import toy_model_path
    from vlmflow.presets import preset
    from vlmflow.sweep import SweepEngine
    from vlmflow.toy.scenes import make_scene

    torch.set_num_threads(args.threads)
    if (toy_model_path() / "config.json").is_file():
        vlm, which = vf.load("toy"), f"trained toy model ({toy_model_path()})"
    else:
        from vlmflow.toy.model import build

        vlm, which = vf.wrap(*build()), "untrained toy LLaVA (data/toy_model missing)"
    L = vlm.num_layers
    configs = preset("from-layer", L, record=None)
    images = [make_scene(0, "test", i).image for i in range(args.n_images)]
    n_cfg = len(configs) * len(images)
    print(f"model: {which}; {L} layers; {len(configs)} configs x {len(images)} images = {n_cfg}; "
          f"max_new_tokens={args.max_new_tokens}; threads={args.threads}", flush=True)
    Q = "describe the image"

    warm = [configs[0], configs[-1]]
    # (c) engine first, so that the process's peak RSS measured after it is the engine's
    engine = SweepEngine(vlm, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    engine.run(images[0], warm, Q)  # untimed warm-up
    texts_c, t_c = timed(lambda: engine_pass(engine, images, configs, Q))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()  # untimed memory pass
    engine.run_many(images, configs, Q)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"(c) engine:        {t_c:8.1f} s  {n_cfg / t_c:7.2f} configs/s  peak RSS {rss_mb:.0f} MiB, "
          f"python-heap peak {py_peak / 2**20:.1f} MiB", flush=True)

    # (b) one vlm.generate per configuration
    unbatched_pass(vlm, images[:1], warm, Q, args.max_new_tokens)  # untimed warm-up
    texts_b, t_b = timed(lambda: unbatched_pass(vlm, images, configs, Q, args.max_new_tokens))
    print(f"(b) vlm.generate:  {t_b:8.1f} s  {n_cfg / t_b:7.2f} configs/s", flush=True)

    # (a) naive: eager + output_attentions, one generate per configuration
    naive_pass(vlm, images[:1], warm, Q, args.max_new_tokens)  # untimed warm-up
    texts_a, t_a = timed(lambda: naive_pass(vlm, images, configs, Q, args.max_new_tokens))
    print(f"(a) naive eager:   {t_a:8.1f} s  {n_cfg / t_a:7.2f} configs/s", flush=True)

    diff_b = sum(texts_b[k] != texts_c[k] for k in texts_c)
    diff_a = sum(texts_a[k] != texts_c[k] for k in texts_c)
    print(f"identical outputs: engine vs vlm.generate {n_cfg - diff_b}/{n_cfg}, engine vs naive {n_cfg - diff_a}/{n_cfg}")
    if diff_b:
        print("ERROR: the engine differs from vlm.generate", file=sys.stderr)
        return 1
    print(f"speedup_vs_naive={t_a / t_c:.1f} speedup_vs_unbatched={t_b / t_c:.1f}")
    return 0 if not diff_a else 1


if __name__ == "__main__":
    sys.exit(main())
