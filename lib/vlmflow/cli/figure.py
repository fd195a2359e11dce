"""`vlmflow figure NAME --model M --device cuda [--param k=v ...] [--out DIR]`: rerun one figure notebook with other
parameters into its own folder (executed notebook, log, figures, stored results).

The notebook runs with papermill in its own process (vlmflow.book.figure); parameters not given keep the figure's
registered defaults (notebooks/figures.toml). Keys are never parameters: set OPENAI_API_KEY etc. in the environment.
"""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("figure", help="rerun one figure notebook with other parameters",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("name", nargs="?", help="figure name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered figures and their defaults")
    p.add_argument("--model", help="'toy', a local folder or a Hugging Face model id (e.g. llava-hf/llava-1.5-7b-hf)")
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--dtype", help="float16, bfloat16, float32 (default: the model's)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                   help="any other notebook parameter; V is read as JSON when it parses (n_images=20, judge=\"llm\")")
    p.add_argument("--out", help="output folder (default: results/figures/NAME/MODEL)")
    p.add_argument("--timeout", type=float, help="seconds before the notebook is stopped (default: the registry's)")
    p.add_argument("--root", default=None, help="book root (default: the checkout holding _config.yml)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from vlmflow import book

    if args.list or not args.name:
        for spec in book.load_registry(args.root).values():
            print(f"{spec.name:20s} {spec.title}  defaults: {dict(spec.defaults)}")
        return 0 if args.list else 2
    params = dict(book.parse_param(p) for p in args.param)
    res = book.figure(args.name, model=args.model, device=args.device, dtype=args.dtype, params=params,
                      out=args.out, root=args.root, timeout=args.timeout)
    print(f"{res.name}: {res.seconds:.1f} s")
    print(f"executed notebook: {res.output}")
    print(f"figures and results: {res.output.parent}")
    return 0
