"""Atomic file writes: a reader sees the old file or the complete new one, never a half-written file.

One helper for every result, cache and checkpoint the library writes (the result store's parts and manifest,
the judged-score cache, toy scenes, training checkpoints, the fetcher's checksum index): the data goes to a temporary
file ``.tmp-<name>.*`` in the destination folder (same file system, so the rename is atomic), is flushed and fsynced,
then ``os.replace``d over the destination, and the folder is fsynced so the rename survives a crash. A killed writer
leaves only a ``.tmp-*`` file, which no reader takes for a result (``vlmflow.store`` sweeps them away).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".tmp-"


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[IO[bytes]], Any]) -> Path:
    """Write ``data`` (bytes, text as UTF-8, or a function that writes into the binary file object it is given) to
    ``path`` atomically (see the module docstring); the parent folder is created. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs) -> Path:
    """``atomic_write`` of ``json.dumps(obj, **dumps_kwargs)``."""
    return atomic_write(path, json.dumps(obj, **dumps_kwargs))


__all__ = ["TMP_PREFIX", "atomic_write", "atomic_write_json", "fsync_dir"]
