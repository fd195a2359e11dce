"""`vlmflow book ...`: build the book (all figure notebooks with papermill, then Jupyter Book HTML).

    vlmflow book build [--only NAME ...] [--test] [--param K=V ...] [--skip-notebooks] [--no-html]
    vlmflow book list
    vlmflow book check-links [HTML_DIR]

The pipeline itself lives in vlmflow.book; `make book` runs `vlmflow book build`.
"""
from __future__ import annotations

from pathlib import Path

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser("book", help="Build the book: execute the figure notebooks, then the HTML.",
                              description="Build the book: execute every registered figure notebook with papermill, "
                                          "then build the HTML with Jupyter Book and check its internal links.")
    sub = p.add_subparsers(dest="book_command", required=True, metavar="ACTION")

    b = sub.add_parser("build", help="Execute the registered notebooks and build _build/html.",
                       description="Execute the registered figure notebooks (each in its own process) and build "
                                   "the HTML book in _build/html; this is what `make book` runs.")
    b.add_argument("--root", default=None, help="The book's root folder. Default: the checkout holding _config.yml.")
    b.add_argument("--only", nargs="+", metavar="NAME",
                   help="Execute only these figures; the others reuse their executed copies in _build.")
    b.add_argument("--test", action="store_true", help="Use each figure's small test parameters.")
    b.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                   help="Override a parameter of every executed notebook (e.g. model=PATH, device=cuda), or of one "
                        "figure with FIGURE.NAME=VALUE (e.g. "
                        "across_architectures.others='[\"Qwen/Qwen2-VL-2B-Instruct\"]'); a name that no executed "
                        "notebook declares is an error. Repeat the option for several.")
    b.add_argument("--skip-notebooks", action="store_true",
                   help="Execute nothing; reuse the executed notebooks in _build/notebooks.")
    b.add_argument("--no-html", action="store_true", help="Execute the notebooks only; build no HTML.")
    b.add_argument("--jobs", type=common.positive_int, default=1,
                   help="Notebooks executed at a time, each in its own process. Default: 1.")
    common.add_json_option(b, "each notebook's time and output, the book and the total time")
    b.set_defaults(func=_build)

    ls = sub.add_parser("list", help="List the registered figure notebooks.",
                        description="List the registered figure notebooks with their titles, sources and pages.")
    ls.add_argument("--root", default=None, help="The book's root folder. Default: the checkout holding _config.yml.")
    common.add_json_option(ls, "the registered figures")
    ls.set_defaults(func=_list)

    c = sub.add_parser("check-links", help="Report the broken internal links of a built book.",
                       description="Report the broken internal links of a built book; the exit code is 1 when "
                                   "there are any.")
    c.add_argument("html_dir", nargs="?", default="_build/html",
                   help="The built HTML folder. Default: _build/html.")
    common.add_json_option(c, "the broken links")
    c.set_defaults(func=_check_links)


def _build(args) -> int:
    from vlmflow import book

    overrides, figure_overrides = book.parse_params(args.param)
    report = book.build(args.root, only=args.only, test=args.test, overrides=overrides,
                        figure_overrides=figure_overrides, skip_notebooks=args.skip_notebooks,
                        html=not args.no_html, jobs=args.jobs)
    if args.json:
        common.print_json({"runs": [{"figure": r.name, "seconds": round(r.seconds, 1), "notebook": str(r.output)}
                                    for r in report.runs],
                           "book": None if report.html is None else str(report.html / "index.html"),
                           "seconds": round(report.seconds, 1)})
        return 0
    for run in report.runs:
        print(f"{run.name}: {run.seconds:.1f} s -> {run.output}")
    if report.html is not None:
        print(f"book: {report.html / 'index.html'}")
    print(f"total: {report.seconds:.1f} s")
    return 0


def _list(args) -> int:
    from vlmflow import book

    specs = book.load_registry(args.root).values()
    if args.json:
        common.print_json({s.name: {"title": s.title, "notebook": s.notebook, "page": s.page,
                                    "waits_for": s.waits_for} for s in specs})
        return 0
    for spec in specs:
        where = spec.page if spec.in_book else f"(not in the book yet: waits for {spec.waits_for})"
        print(f"{spec.name:20s} {spec.title:40s} {spec.notebook} -> {where}")
    return 0


def _check_links(args) -> int:
    from vlmflow import book

    if not Path(args.html_dir).is_dir():
        from vlmflow.errors import UsageError

        raise UsageError(f"{args.html_dir}: no such folder; build the book first (`vlmflow book build`)")
    broken = book.check_links(args.html_dir)
    if args.json:
        common.print_json({"broken": broken})
        return 1 if broken else 0
    for line in broken:
        print(line)
    print(f"{len(broken)} broken internal link(s)")
    return 1 if broken else 0
