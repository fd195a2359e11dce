"""`vlmflow figure NAME --model M --device cuda [--param k=v ...] [--out DIR]`: rerun one figure notebook with other
parameters into its own folder (executed notebook, log, figures, stored results).

The notebook runs with papermill in its own process (vlmflow.book.figure); parameters not given keep the figure's
registered defaults (notebooks/figures.toml), and a parameter the notebook does not declare is an error before
anything runs. Keys are never parameters: set OPENAI_API_KEY etc. in the environment.
"""
from __future__ import annotations

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser("figure", help="Rerun one figure notebook with other parameters.",
                              description=" ".join(__doc__.split("\n\n")[:2]).replace("\n", " "))
    p.add_argument("name", nargs="?", help="The figure to rerun (see --list).")
    p.add_argument("--list", action="store_true", help="List the registered figures and their default parameters.")
    p.add_argument("--model",
                   help="The model: 'toy', a local model folder or a Hugging Face model id (e.g. "
                        "llava-hf/llava-1.5-7b-hf). Default: the figure's.")
    p.add_argument("--device", help="Where the model runs: cpu, cuda, cuda:N, mps or auto. Default: the figure's.")
    p.add_argument("--dtype", choices=common.DTYPES, help="Weight precision. Default: the model's own.")
    p.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                   help="Set any other parameter the notebook declares; V is read as JSON when it parses "
                        "(n_images=20, judge=\"llm\"). Repeat the option for several.")
    p.add_argument("--out", help="The output folder. Default: results/figures/NAME/MODEL.")
    p.add_argument("--timeout", type=common.positive_float,
                   help="Seconds before the notebook is stopped. Default: the figure's registered timeout.")
    p.add_argument("--root", default=None, help="The book's root folder. Default: the checkout holding _config.yml.")
    common.add_json_option(p, "the figure list, or the executed notebook, its folder and the time taken")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from vlmflow import book

    if args.list or not args.name:
        specs = book.load_registry(args.root).values()
        if args.json:
            common.print_json({s.name: {"title": s.title, "defaults": dict(s.defaults), "waits_for": s.waits_for}
                               for s in specs})
        else:
            for spec in specs:
                waits = "" if spec.in_book else f"  (not in the book yet: waits for {spec.waits_for})"
                print(f"{spec.name:20s} {spec.title}  defaults: {dict(spec.defaults)}{waits}")
        if not args.list:
            from vlmflow.errors import UsageError

            raise UsageError("name a figure to rerun (listed above), or pass --list")
        return 0
    params = dict(book.parse_param(p) for p in args.param)
    root = book.repo_root(args.root) if args.root is None else args.root
    spec = book.select(book.load_registry(root), [args.name])[0]
    book.check_parameter_names(spec, params, root)  # before the model checks: no time spent on a typo
    if args.out:
        common.output_folder(args.out, "--out")
    if args.device is not None:
        from vlmflow.model import check_device

        check_device(args.device)
    if args.model is not None:
        from vlmflow.model import model_source

        model_source(args.model)
    res = book.figure(args.name, model=args.model, device=args.device, dtype=args.dtype, params=params,
                      out=args.out, root=args.root, timeout=args.timeout)
    if args.json:
        common.print_json({"figure": res.name, "seconds": round(res.seconds, 1), "notebook": str(res.output),
                           "folder": str(res.output.parent)})
    else:
        print(f"{res.name}: {res.seconds:.1f} s")
        print(f"executed notebook: {res.output}")
        print(f"figures and results: {res.output.parent}")
    return 0
