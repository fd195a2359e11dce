"""`vlmflow book ...`: build the book (all figure notebooks with papermill, then Jupyter Book HTML).

    vlmflow book build [--only NAME ...] [--test] [--param K=V ...] [--skip-notebooks] [--no-html]
    vlmflow book list
    vlmflow book check-links [HTML_DIR]

The pipeline itself lives in vlmflow.book; `make book` runs `vlmflow book build`.
"""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("book", help="build the book: execute figure notebooks, then the HTML",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="book_command", required=True, metavar="ACTION")

    b = sub.add_parser("build", help="execute the registered notebooks and build _build/html")
    b.add_argument("--root", default=None, help="book root (default: the checkout holding _config.yml)")
    b.add_argument("--only", nargs="+", metavar="NAME", help="execute only these figures (others reuse _build)")
    b.add_argument("--test", action="store_true", help="use each figure's small test parameters")
    b.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                   help="override a parameter of every notebook (e.g. model=PATH, device=cuda)")
    b.add_argument("--skip-notebooks", action="store_true", help="reuse executed notebooks in _build/notebooks")
    b.add_argument("--no-html", action="store_true", help="execute notebooks only")
    b.set_defaults(func=_build)

    ls = sub.add_parser("list", help="list the registered figure notebooks")
    ls.add_argument("--root", default=None)
    ls.set_defaults(func=_list)

    c = sub.add_parser("check-links", help="report broken internal links of a built book")
    c.add_argument("html_dir", nargs="?", default="_build/html")
    c.set_defaults(func=_check_links)


def _build(args) -> int:
    from vlmflow import book

    overrides = dict(book.parse_param(p) for p in args.param)
    report = book.build(args.root, only=args.only, test=args.test, overrides=overrides,
                        skip_notebooks=args.skip_notebooks, html=not args.no_html)
    for run in report.runs:
        print(f"{run.name}: {run.seconds:.1f} s -> {run.output}")
    if report.html is not None:
        print(f"book: {report.html / 'index.html'}")
    print(f"total: {report.seconds:.1f} s")
    return 0


def _list(args) -> int:
    from vlmflow import book

    for spec in book.load_registry(args.root).values():
        print(f"{spec.name:20s} {spec.title:40s} {spec.notebook} -> {spec.page}")
    return 0


def _check_links(args) -> int:
    from vlmflow import book

    broken = book.check_links(args.html_dir)
    for line in broken:
        print(line)
    print(f"{len(broken)} broken internal link(s)")
    return 1 if broken else 0
