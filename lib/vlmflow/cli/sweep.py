"""`vlmflow sweep --model M --data D --preset P [--n-images N] [--max-new-tokens T] [--force-prefix K] [--shard i/n]
--out DIR` runs a knockout sweep into a resumable result folder; `vlmflow sweep --merge DIR... --out DIR` joins shards.

Pieces: data and the driver in ``vlmflow.sweep`` (``sweep_images``, ``run_sweep``, ``SweepEngine``), configurations in
``vlmflow.presets``, the folder in ``vlmflow.store`` (read it with ``vlmflow.store.load_results``)."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a knockout sweep (resumable, shardable) or merge shard folders",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", help="'toy', a local model folder or a Hugging Face id (default: toy)")
    p.add_argument("--data", default="toy-test", help="toy-test, coco-sample, a COCO folder or its instances.json")
    p.add_argument("--preset", default="from-layer", help="from-layer, upto-layer, window or topk (default: from-layer)")
    p.add_argument("--n-images", type=int, default=None, help="first N images of the data (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--force-prefix", type=int, default=0, metavar="K",
                   help="also run each knockout with its first K tokens forced to the baseline's")
    p.add_argument("--question", default="describe the image")
    p.add_argument("--batch-size", type=int, default=32, help="configurations decoded together (memory)")
    p.add_argument("--shard", default=None, metavar="i/n", help="run every n-th image starting at i (0-based)")
    p.add_argument("--seed", type=int, default=0, help="toy-test scene seed")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    p.add_argument("--dtype", default=None, help="float16, bfloat16, float32 (default: the checkpoint's)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR", help="join these shard folders into --out")
    p.add_argument("--out", required=True, help="result folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from vlmflow import store as st

    if args.merge:
        n = st.merge(args.merge, args.out)
        print(f"merged {len(args.merge)} folders into {args.out}: {n} result rows")
        return 0
    from vlmflow.model import load
    from vlmflow.presets import PRESETS, UnknownPresetError, preset
    from vlmflow.sweep import run_sweep, sweep_images

    if args.preset not in PRESETS:  # fail before the model loads
        raise UnknownPresetError(f"unknown sweep preset {args.preset!r}; presets: {', '.join(PRESETS)}")
    shard = st.shard_of(args.shard)
    data_id, images = sweep_images(args.data, args.n_images, args.seed)
    vlm = load(args.model, device=args.device, dtype=args.dtype)
    configs = preset(args.preset, vlm.num_layers, force_prefix=args.force_prefix)
    settings = settings_for(vlm, args.model, data_id, args.question, args.max_new_tokens, args.seed, args.device,
                            args.dtype)
    provenance = {"preset": args.preset, "command": "vlmflow sweep", "shard": args.shard,
                  "weights": settings["weights"], "model": args.model}
    store = st.ResultStore(args.out, settings, provenance)
    n = run_sweep(vlm, images, configs, store, question=args.question, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, shard=shard, progress=not args.quiet)
    print(f"{n} configurations computed; results in {args.out}")
    return 0


def settings_for(vlm, model: str, data_id: str, question: str, max_new_tokens: int, seed: int, device: str,
                 dtype) -> dict:
    """Everything that determines a sweep's numbers: ``vlmflow.sweep.sweep_settings`` (shared with ``vf.sweep``)."""
    from vlmflow.sweep import sweep_settings

    return {**sweep_settings(vlm, data_id, question=question, max_new_tokens=max_new_tokens, seed=seed,
                             device=device, dtype=dtype), "model": model}
