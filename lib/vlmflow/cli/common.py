"""What the `vlmflow` sub-commands share: option types that refuse impossible values at parse time, the model
options (--model / --device / --dtype) and their checks before any weights load, --json output, and output folders
that are never left half-written.

This module has no ``register`` and so adds no sub-command (``vlmflow.cli`` discovers commands by that function).
Nothing here imports torch or transformers at import time: ``vlmflow --help`` and argument errors stay fast.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from vlmflow.errors import UsageError

# dtype names that vlmflow.model.load accepts (kept here, torch-free, so that argparse can list them)
DTYPES = ("float16", "bfloat16", "float32", "auto")


def _number(convert, ok, wanted: str):
    """An argparse type: ``convert(text)`` that must satisfy ``ok``; the error says what was ``wanted``."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    parse.__name__ = wanted  # argparse names the type by it in some messages
    return parse


_INF = float("inf")
positive_int = _number(int, lambda v: v >= 1, "a whole number >= 1")
nonnegative_int = _number(int, lambda v: v >= 0, "a whole number >= 0")
positive_float = _number(float, lambda v: 0 < v < _INF, "a finite number > 0")
nonnegative_float = _number(float, lambda v: 0 <= v < _INF, "a finite number >= 0")
fraction = _number(float, lambda v: 0 <= v <= 1, "a number between 0 and 1")


def text(value: str) -> str:
    """argparse type: text with at least one non-blank character (a question, a prompt)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def add_model_options(parser, *, model_default: str | None = "toy", default_text: str | None = None) -> None:
    """--model, --device and --dtype, the same for every command that loads a model."""
    default = f" Default: {default_text or model_default}."
    parser.add_argument("--model", default=model_default,
                        help="The model to load: 'toy' (the shipped toy model), a local model folder, or a Hugging "
                             f"Face model id whose weights are in the local cache.{default}")
    parser.add_argument("--device", default="cpu",
                        help="Where the model runs: cpu, cuda, cuda:N, mps, or auto (spread over the available "
                             "devices); it is checked against this torch build before any weights load. "
                             "Default: cpu.")
    parser.add_argument("--dtype", default=None, choices=DTYPES,
                        help="Weight precision. Default: the checkpoint's own.")


def add_data_option(parser, default: str, *, image_folders: bool = True) -> None:
    """--data, the same for every command that reads images: a name ``vlmflow.data.resolve`` knows (checked there,
    with the valid list on a mistake). ``image_folders``: whether a plain folder of images (no ground truth) will do."""
    folder = ", its instances.json or a folder of images" if image_folders else " or its instances.json"
    parser.add_argument("--data", default=default,
                        help="The images (vlmflow.data.resolve): toy-test, toy-val or toy-train (seeded toy scenes), "
                             "coco-sample (the shipped COCO sample), a COCO-format folder (e.g. toy scenes written by "
                             f"`vlmflow toy scenes`){folder}. Default: {default}.")


def check_model_options(args) -> None:
    """The device against what torch has and the model against what can be loaded (a second or two), before data
    or weights load."""
    from vlmflow.model import check_device, model_source

    if getattr(args, "model", None) is not None:
        model_source(args.model)
    check_device(args.device)


def load_model(args):
    """vlmflow.model.load with the model options (device checked first)."""
    from vlmflow.model import load

    check_model_options(args)
    return load(args.model, device=args.device, dtype=args.dtype)


def add_json_option(parser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"Print {what} as one JSON object instead of text.")


def print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str))


def output_file(path: str, option: str) -> Path:
    """A file the command will write: refuse a folder, and a parent that exists as a file."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    return out


def output_folder(path: str, option: str) -> Path:
    """A folder the command will fill: refuse an existing file (or a file on the way to it)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {path} is a file; give a folder (new or from an earlier run)")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"{option} {path}: {parent} is a file, not a folder")
    return out


@contextmanager
def no_leftovers(folder: Path, keep=None):
    """Remove ``folder`` again if it did not exist before and the block raises: a failed command leaves no empty or
    half-written result folder behind. A folder that existed is never touched, and ``keep(folder)`` True keeps it too
    (a sweep's committed results, which a rerun resumes from); Ctrl-C keeps everything."""
    existed = folder.exists()
    try:
        yield folder
    except Exception:
        if not existed and folder.is_dir() and not (keep is not None and keep(folder)):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def note(message: str) -> None:
    print(f"vlmflow: {message}", file=sys.stderr)
