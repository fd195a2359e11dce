"""`vlmflow localize --model M --data D --out DIR [--n-images N]`: localization accuracy of the tokens that name
objects (``vlmflow.localize``). D is a name ``vlmflow.data.resolve`` knows (``coco-sample``, ``toy-test``...), a
COCO-format folder (toy scenes written by `vlmflow toy scenes`) or its ``instances.json``. Writes
``objects.parquet`` (one row per mention x layer x tolerance), ``images.parquet``, ``accuracy_by_layer.csv``,
``accuracy_by_band.csv`` (all objects and the KO-lost subset) and ``provenance.json``; prints the accuracy by band
next to the chance rate. The per-image results are stored in --out through ``localize.stored_localization`` (the one
experiment path), so a rerun computes only the images it lacks and a folder of other settings is refused."""
from __future__ import annotations

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "localize", help="Measure how well object-naming tokens localize their objects, by layer (Figures 6-7).",
        description="For every generated token that names an object, find the image token each layer's attention "
                    "peaks on and score whether it lies on that object, by layer and by layer band, next to the "
                    "chance rate; tables and provenance go to --out.")
    common.add_model_options(p)
    common.add_data_option(p, "coco-sample", image_folders=False)
    p.add_argument("--out", required=True, help="The output folder for the tables and the provenance.")
    p.add_argument("--n-images", type=common.positive_int, default=None,
                   help="Use only the first N images (at least 1). Default: all of them.")
    p.add_argument("--tolerance", type=common.nonnegative_float, action="append", default=None,
                   help="How far (pixels for COCO, tokens for toy scenes) a peak may lie from the object and still "
                        "count; repeat the option for several. Default: 0 20 40 80 px for COCO, 0 1 tokens for toy.")
    p.add_argument("--heads", default="mean",
                   help="How attention heads are combined: mean, max, or comma-separated head indices. "
                        "Default: mean.")
    p.add_argument("--instances", default="any", choices=("any", "nearest"),
                   help="Which instances of the named category count as hits: any of them, or only the nearest. "
                        "Default: any.")
    p.add_argument("--toy-match", default="exact", choices=("exact", "shape"),
                   help="In toy scenes, whether a mention targets the instances with every named attribute (exact) "
                        "or those of its shape alone. Default: exact.")
    p.add_argument("--row", default="predicting", choices=("predicting", "fed"),
                   help="Which attention row is read: the one predicting the object word, or the one fed with it. "
                        "Default: predicting.")
    p.add_argument("--no-knockout", action="store_true",
                   help="Skip the run with image->generated knocked out (then there is no 'lost' subset).")
    p.add_argument("--max-new-tokens", type=common.positive_int, default=64,
                   help="The most tokens of each description (at least 1). Default: 64.")
    common.add_json_option(p, "the accuracy by layer band, the counts and the output folder")
    p.set_defaults(func=run)


def _heads(text: str):
    from vlmflow.errors import UsageError

    if text in ("mean", "max"):
        return text
    try:
        heads = [int(h) for h in text.split(",")]
    except ValueError:
        raise UsageError(f"--heads {text!r}: use mean, max, or comma-separated head indices such as 0,3") from None
    if any(h < 0 for h in heads):
        raise UsageError(f"--heads {text!r}: head indices start at 0")
    return heads


def run(args) -> int:
    from vlmflow.localize import stored_localization

    heads = _heads(args.heads)
    out = common.output_folder(args.out, "--out")
    common.check_model_options(args)
    from vlmflow.store import holds_results

    with common.no_leftovers(out, keep=holds_results):
        # the one experiment path: --out is the result folder, so a rerun reads it back and other settings are refused
        res = stored_localization(out, model=args.model, device=args.device, dtype=args.dtype, data=args.data,
                                  n_images=args.n_images, tolerances=args.tolerance, heads=heads, row=args.row,
                                  instances=args.instances, toy_match=args.toy_match, knockout=not args.no_knockout,
                                  max_new_tokens=args.max_new_tokens, exact=True)
        _write_tables(out, res, args)
    band = res.accuracy("band", "all")
    n_obj = res.objects.drop_duplicates(["image_id", "object", "occurrence"])
    if args.json:
        common.print_json({"images": len(res.images), "objects_present": int(n_obj["present"].sum()),
                           "objects_absent": int((~n_obj["present"].astype(bool)).sum()), "out": str(out),
                           "accuracy_by_band": band.to_dict("records")})
        return 0
    print(f"{len(res.images)} images, {int(n_obj['present'].sum())} named objects present "
          f"({int((~n_obj['present'].astype(bool)).sum())} not in the image) -> {out}")
    with_pd_options(lambda: print(band.to_string(index=False, float_format=lambda v: f"{v:.3f}")))
    return 0


def _write_tables(out, res, args) -> None:
    import pandas as pd

    from vlmflow.atomic import atomic_write, atomic_write_json

    atomic_write(out / "objects.parquet", res.objects.to_parquet)
    atomic_write(out / "images.parquet", res.images.to_parquet)
    for by in ("layer", "band"):
        tables = [res.accuracy(by, subset).assign(subset=subset) for subset in ("all", "lost")]
        atomic_write(out / f"accuracy_by_{by}.csv", pd.concat(tables).to_csv(index=False))
    atomic_write_json(out / "provenance.json", {**res.provenance, "command": "vlmflow localize",
                                                "args": {k: v for k, v in vars(args).items() if k != "func"}},
                      indent=1, default=str)


def with_pd_options(fn):
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        fn()
