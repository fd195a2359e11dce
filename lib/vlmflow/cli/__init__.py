"""The `vlmflow` command line.

Each module in this package that defines ``register(subparsers)`` adds one sub-command (``describe``,
``toy``, ``judge``, ``sweep``, ...). Modules are discovered, so adding a command never edits this file;
``vlmflow.cli.common`` holds what the commands share (option types, the model options, --json output).

The one error path: a user mistake (a bad option value, file, model id, device, knockout string, ...) raises a
``vlmflow.errors.VlmflowError`` (argparse's own errors go the same way) and ends as one line
``vlmflow: error: ...`` on stderr with exit code 2; anything else is a bug and keeps its traceback (exit 1).
``VLMFLOW_DEBUG=1`` shows the traceback of user errors too. Library warnings meant for the user
(``vlmflow.errors.VlmflowWarning``) print as one line ``vlmflow: warning: ...``.
Command modules import torch / transformers inside their ``run`` functions only, so ``--help`` and argument
errors answer in a fraction of a second.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``vlmflow: error: <what> (see `vlmflow CMD --help`)``, exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"vlmflow: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from vlmflow import __version__

    parser = ArgumentParser(prog="vlmflow", description="Knock out and record attention between the token groups "
                            "of vision-language models, judge their descriptions, run sweeps and build the book. "
                            "Every user mistake ends in one line `vlmflow: error: ...` and exit code 2.")
    parser.add_argument("--version", action="version", version=f"vlmflow {__version__}",
                        help="Print the version of vlmflow and exit.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    from vlmflow.errors import VlmflowError, VlmflowWarning

    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, VlmflowWarning):
            print(f"vlmflow: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vlmflow ... | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except VlmflowError as exc:  # one clear line for user errors; tracebacks stay available with VLMFLOW_DEBUG=1
        if _debug():
            raise
        print(f"vlmflow: error: {exc}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = show


def _debug() -> bool:
    import os

    return os.environ.get("VLMFLOW_DEBUG", "") not in ("", "0")


if __name__ == "__main__":
    sys.exit(main())
