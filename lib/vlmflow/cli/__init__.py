"""The `vlmflow` command line.

Each module in this package that defines ``register(subparsers)`` adds one sub-command (``describe``,
``toy``, ``judge``, ``sweep``, ...). Modules are discovered, so adding a command never edits this file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for user errors; tracebacks stay available with VLMFLOW_DEBUG=1
        from vlmflow.errors import VlmflowError

        if isinstance(exc, VlmflowError) and not _debug():
            print(f"vlmflow: error: {exc}", file=sys.stderr)
            return 2
        raise


def _debug() -> bool:
    import os

    return os.environ.get("VLMFLOW_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    sys.exit(main())
