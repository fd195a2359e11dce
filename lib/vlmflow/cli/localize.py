"""`vlmflow localize --model M --data D --out DIR [--n-images N]`: localization accuracy of the tokens that name
objects (``vlmflow.localize``). D is a COCO-format folder (the COCO sample: ``coco_sample``; toy scenes written by
`vlmflow toy scenes`). Writes ``objects.parquet`` (one row per mention x layer x tolerance), ``images.parquet``,
``accuracy_by_layer.csv``, ``accuracy_by_band.csv`` (all objects and the KO-lost subset) and ``provenance.json``;
prints the accuracy by band next to the chance rate."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("localize", help="localization accuracy of object-naming tokens (Figures 6-7)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy", help="'toy', a local model folder or a Hugging Face id (default: toy)")
    p.add_argument("--data", default="coco_sample",
                   help="a COCO-format folder, or 'coco_sample' for the shipped COCO sample (default)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-images", type=int, default=None, help="first N images only")
    p.add_argument("--tolerance", type=float, action="append", default=None,
                   help="tolerance (repeat for a sweep); px for COCO (default 0 20 40 80), tokens for toy (0 1)")
    p.add_argument("--heads", default="mean", help="mean, max, or comma-separated head indices")
    p.add_argument("--instances", default="any", choices=("any", "nearest"))
    p.add_argument("--toy-match", default="exact", choices=("exact", "shape"),
                   help="toy world: a mention targets instances with every named attribute (exact) or its shape only")
    p.add_argument("--row", default="predicting", choices=("predicting", "fed"))
    p.add_argument("--no-knockout", action="store_true", help="skip the KO image->generated run (no 'lost' subset)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from vlmflow.data import CocoSample, coco_sample
    from vlmflow.localize import localize_dataset
    from vlmflow.model import load

    sample = coco_sample(progress=False) if args.data == "coco_sample" else CocoSample.from_folder(args.data)
    heads = args.heads if args.heads in ("mean", "max") else [int(h) for h in args.heads.split(",")]
    vlm = load(args.model, device=args.device, dtype=args.dtype)
    res = localize_dataset(vlm, sample, n_images=args.n_images, tolerances=args.tolerance, heads=heads,
                           row=args.row, instances=args.instances, toy_match=args.toy_match,
                           knockout=not args.no_knockout,
                           max_new_tokens=args.max_new_tokens)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res.objects.to_parquet(out / "objects.parquet")
    res.images.to_parquet(out / "images.parquet")
    import pandas as pd

    for by in ("layer", "band"):
        tables = [res.accuracy(by, subset).assign(subset=subset) for subset in ("all", "lost")]
        pd.concat(tables).to_csv(out / f"accuracy_by_{by}.csv", index=False)
    (out / "provenance.json").write_text(json.dumps({**res.provenance, "command": "vlmflow localize",
                                                     "args": {k: v for k, v in vars(args).items() if k != "func"}},
                                                    indent=1, default=str))
    band = res.accuracy("band", "all")
    n_obj = res.objects.drop_duplicates(["image_id", "object", "occurrence"])
    print(f"{len(res.images)} images, {int(n_obj['present'].sum())} named objects present "
          f"({int((~n_obj['present'].astype(bool)).sum())} not in the image) -> {out}")
    with_pd_options(lambda: print(band.to_string(index=False, float_format=lambda v: f"{v:.3f}")))
    return 0


def with_pd_options(fn):
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        fn()
