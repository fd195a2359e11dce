"""`vlmflow data fetch [NAME...]`, `vlmflow data verify [NAME...]`, `vlmflow data where`: the data layer
(`vlmflow.data.fetcher`) from the shell."""
from __future__ import annotations

from pathlib import Path

from vlmflow.cli import common


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="Fetch, verify or locate the data files (COCO sample, POPE, MME, CHAIR).",
                              description="Fetch, verify or locate the public data files (the COCO sample, POPE, "
                                          "MME and the CHAIR word lists), each checked against its registered "
                                          "SHA-256.")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    f = sub.add_parser("fetch", help="Download the missing data files and check every SHA-256.",
                       description="Download the data files that are missing and check the SHA-256 of every file.")
    f.add_argument("names", nargs="*", metavar="NAME", help="The data sets to fetch: coco-sample, pope, mme, chair (the names --data "
                        "uses). Default: all registered.")
    f.add_argument("--root", help="The data folder to fill. Default: the resolved data root (see `data where`).")
    f.add_argument("--mirror", help="A base URL serving the data-root layout, used instead of the public sources.")
    f.add_argument("--quiet", action="store_true", help="Show no progress bar.")
    common.add_json_option(f, "each data set's folder")
    f.set_defaults(func=_fetch)

    v = sub.add_parser("verify", help="Re-hash every data file and report problems (changes nothing).",
                       description="Re-hash every registered data file and report the missing or changed ones; "
                                   "nothing is changed. The exit code is 1 when a file is not as registered.")
    v.add_argument("names", nargs="*", metavar="NAME", help="The data sets to check: coco-sample, pope, mme, chair. Default: all registered.")
    v.add_argument("--root", help="The data folder to check. Default: the resolved data root (see `data where`).")
    common.add_json_option(v, "the counts and each problem")
    v.set_defaults(func=_verify)

    w = sub.add_parser("where", help="Print the data root, how it was found, and each data set's state.",
                       description="Print the data root, how it was found, the user cache, and how many files of "
                                   "each data set are present.")
    common.add_json_option(w, "the data root, its source, the cache and each data set's state")
    w.set_defaults(func=_where)


def _fetch(args) -> int:
    from vlmflow.data.fetcher import fetch_all

    if args.root:
        common.output_folder(args.root, "--root")
    folders = fetch_all(args.names or None, root=args.root, mirror=args.mirror, progress=not args.quiet)
    if args.json:
        common.print_json({name: str(folder) for name, folder in folders.items()})
    else:
        for name, folder in folders.items():
            print(f"{name}\t{folder}")
    return 0


def _verify(args) -> int:
    from vlmflow.data.fetcher import data_root, verify
    from vlmflow.errors import UsageError

    if args.root and not Path(args.root).is_dir():
        raise UsageError(f"--root {args.root}: no such folder")
    root = args.root or data_root()
    results = verify(args.names or None, root=root)
    bad = [r for r in results if not r.ok]
    if args.json:
        common.print_json({"root": str(root), "files": len(results), "ok": len(results) - len(bad),
                           "problems": [{"path": str(r.path), "status": r.status, "found": r.got} for r in bad]})
    else:
        for r in bad:
            print(r.describe())
        print(f"{len(results) - len(bad)}/{len(results)} files ok in {root}")
    return 1 if bad else 0


def _where(args) -> int:
    from vlmflow.data.fetcher import ENV_DATA, cache_root, locate
    from vlmflow.data.registry import datasets, folder_of

    root, how = locate()
    state = {name: {"present": sum((root / e.path).is_file() for e in files), "files": len(files),
                    "folder": str(root / folder_of(name))} for name, files in datasets().items()}
    if args.json:
        common.print_json({"root": str(root), "found_from": how, "override": ENV_DATA, "cache": str(cache_root()),
                           "datasets": state})
        return 0
    print(f"data root\t{root}\t(from {how}; set {ENV_DATA} to override)")
    print(f"user cache\t{cache_root()}")
    for name, s in state.items():
        print(f"{name}\t{s['present']}/{s['files']} files present\t{s['folder']}")
    return 0
