"""`vlmflow data fetch [NAME...]`, `vlmflow data verify [NAME...]`, `vlmflow data where`: the data layer
(`vlmflow.data.fetcher`) from the shell."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="fetch, verify or locate the data files (COCO sample, POPE, MME, CHAIR)",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    f = sub.add_parser("fetch", help="download missing data files and check every SHA-256")
    f.add_argument("names", nargs="*", metavar="NAME", help="datasets (default: all registered)")
    f.add_argument("--root", help="data folder to fill (default: the resolved data root)")
    f.add_argument("--mirror", help="base URL serving the data-root layout (replaces the public sources)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_fetch)

    v = sub.add_parser("verify", help="re-hash every data file and report problems (changes nothing)")
    v.add_argument("names", nargs="*", metavar="NAME", help="datasets (default: all registered)")
    v.add_argument("--root", help="data folder to check (default: the resolved data root)")
    v.set_defaults(func=_verify)

    w = sub.add_parser("where", help="print the data root, how it was found, and each dataset's state")
    w.set_defaults(func=_where)


def _fetch(args) -> int:
    from vlmflow.data.fetcher import fetch_all

    for name, folder in fetch_all(args.names or None, root=args.root, mirror=args.mirror,
                                  progress=not args.quiet).items():
        print(f"{name}\t{folder}")
    return 0


def _verify(args) -> int:
    from vlmflow.data.fetcher import data_root, verify

    root = args.root or data_root()
    results = verify(args.names or None, root=root)
    bad = [r for r in results if not r.ok]
    for r in bad:
        print(r.describe())
    print(f"{len(results) - len(bad)}/{len(results)} files ok in {root}")
    return 1 if bad else 0


def _where(args) -> int:
    from vlmflow.data.fetcher import ENV_DATA, cache_root, locate
    from vlmflow.data.registry import datasets

    root, how = locate()
    print(f"data root\t{root}\t(from {how}; set {ENV_DATA} to override)")
    print(f"user cache\t{cache_root()}")
    for name, files in datasets().items():
        present = sum((root / e.path).is_file() for e in files)
        print(f"{name}\t{present}/{len(files)} files present\t{root / name}")
    return 0
