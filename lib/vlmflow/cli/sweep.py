"""`vlmflow sweep --model M --data D --preset P [--n-images N] [--max-new-tokens T] [--force-prefix K] [--shard i/n]
--out DIR` runs a knockout sweep into a resumable result folder; `vlmflow sweep --merge DIR... --out DIR` joins shards.

The run is ``vlmflow.sweep_run.stored_sweep_rows`` with ``--out`` as its exact folder: the same key as ``vf.sweep`` and the
notebooks' ``stored_sweep``, so a folder filled here is read back there; configurations in ``vlmflow.presets``, the
folder in ``vlmflow.store`` (read it with ``vlmflow.store.load_results``)."""
from __future__ import annotations

from pathlib import Path

from vlmflow.cli import common

PRESET_NAMES = ("from-layer", "upto-layer", "window", "topk")  # vlmflow.presets.PRESETS, without importing torch


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="Run a knockout sweep into a resumable result folder, or merge shard folders.",
        description="Run every knockout configuration of a preset on the first N images of a data set into a result "
                    "folder that a rerun resumes (and that shards can fill in parallel); with --merge, join shard "
                    "folders into --out instead. Read the folder with vlmflow.store.load_results.")
    common.add_model_options(p)
    common.add_data_option(p, "toy-test")
    p.add_argument("--preset", default="from-layer", choices=PRESET_NAMES,
                   help="The set of knockout configurations (see vlmflow.presets). Default: from-layer.")
    p.add_argument("--n-images", type=common.positive_int, default=None,
                   help="Use the first N images of the data (at least 1). Default: all of them.")
    p.add_argument("--max-new-tokens", type=common.positive_int, default=64,
                   help="The most tokens generated per configuration (at least 1). Default: 64.")
    p.add_argument("--force-prefix", type=common.nonnegative_int, default=0, metavar="K",
                   help="Also run each knockout with its first K generated tokens forced to the baseline's. "
                        "Default: 0 (no forced runs).")
    p.add_argument("--question", default="describe the image", type=common.text,
                   help="The prompt of every run. Default: 'describe the image'.")
    p.add_argument("--batch-size", type=common.positive_int, default=32,
                   help="How many configurations are decoded together; lower it when memory runs out. Default: 32.")
    p.add_argument("--shard", default=None, metavar="i/n",
                   help="Run only every n-th image starting at image i (0-based), e.g. 0/4, so that n processes "
                        "can share a sweep. Default: all images.")
    p.add_argument("--seed", type=common.nonnegative_int, default=0,
                   help="The seed of the toy scenes (toy-test, toy-val, toy-train). Default: 0.")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="Join these shard folders (same settings) into --out instead of running a sweep.")
    p.add_argument("--out", required=True, help="The result folder: new, or one of an earlier run to resume.")
    p.add_argument("--quiet", action="store_true", help="Show no progress bar.")
    common.add_json_option(p, "the number of configurations computed (or rows merged) and the folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from vlmflow import store as st

    out = common.output_folder(args.out, "--out")
    if args.merge:
        for folder in args.merge:
            if not Path(folder).is_dir():
                raise st.StoreError(f"--merge {folder}: no such folder")
        with common.no_leftovers(out, keep=st.holds_results):
            n = st.merge(args.merge, out)
        if args.json:
            common.print_json({"merged": list(args.merge), "rows": n, "out": str(out)})
        else:
            print(f"merged {len(args.merge)} folders into {out}: {n} result rows")
        return 0
    from vlmflow.presets import preset
    from vlmflow.sweep_run import check_preset, stored_sweep_rows

    st.shard_of(args.shard)  # a bad --shard fails before anything loads
    common.check_model_options(args)  # fail before the data and the model load
    check_preset(out, args.preset)
    with common.no_leftovers(out, keep=st.holds_results):
        rows = stored_sweep_rows(
            out, lambda n_layers: preset(args.preset, n_layers, force_prefix=args.force_prefix), model=args.model,
            data=args.data, n_images=args.n_images, seed=args.seed, device=args.device, dtype=args.dtype,
            question=args.question, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, shard=args.shard,
            progress=not args.quiet, exact=True,
            provenance={"preset": args.preset, "command": "vlmflow sweep", "shard": args.shard})
    n = rows.attrs["computed"]
    if args.json:
        common.print_json({"computed": n, "images": rows.attrs["n_images"], "configurations": rows.attrs["n_configs"],
                           "out": str(out)})
    else:
        print(f"{n} configurations computed; results in {out}")
    return 0
