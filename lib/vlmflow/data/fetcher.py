"""Where vlmflow's data lives, and how it gets there with checksums.

`data_root()` resolves, in order: ``$VLMFLOW_DATA``; the ``shared/data`` folder beside the checkout (walking up from
this package, so ``<repo>/../shared/data``); the user cache (``$XDG_CACHE_HOME/vlmflow/data``, default
``~/.cache/vlmflow/data``), which `fetch` fills from the public sources listed in `registry.json`.

`fetch(name)` returns the data set's folder ``<root>/<folder>`` (``coco-sample`` lives in ``coco_sample/``,
``registry.folder_of``) after checking every registered file of that dataset against its SHA-256.
Hashing is cached by (size, mtime) in a small stamp file in the user cache (never in the data folder, which may be
read-only), so re-checking 100 images costs 100 ``stat`` calls. Missing files are downloaded (only into a folder
vlmflow may write: the user cache, ``$VLMFLOW_DATA`` or an explicit ``root``; the checkout's shared folder is never
written), atomically (``.part`` file + rename) and resumably (HTTP Range on an existing ``.part``). A ``mirror`` (or
``$VLMFLOW_DATA_MIRROR``) is a base URL serving the data-root layout and replaces the registry URLs.

Readers (`coco.py`, `pope.py`, `mme.py`) and tests reach the data only through `fetch`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vlmflow.atomic import atomic_write_json
from vlmflow.data.registry import REGISTRY_FILE, FileEntry, datasets, entries, folder_of, sha256_file
from vlmflow.errors import DataNotAvailableError

ENV_DATA = "VLMFLOW_DATA"
ENV_MIRROR = "VLMFLOW_DATA_MIRROR"
Source = Literal["$VLMFLOW_DATA", "checkout", "cache", "argument"]
_TIMEOUT_S = 30
_CHUNK = 1 << 16


def cache_root() -> Path:
    """vlmflow's user cache folder: ``$XDG_CACHE_HOME/vlmflow`` or ``~/.cache/vlmflow``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vlmflow"


def checkout_data_dir() -> Path | None:
    """The ``shared/data`` folder beside the checkout (first ``<ancestor>/shared/data`` above this file), or None."""
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def locate() -> tuple[Path, Source]:
    """(data root, how it was found)."""
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser(), "$VLMFLOW_DATA"
    shared = checkout_data_dir()
    if shared is not None:
        return shared, "checkout"
    return cache_root() / "data", "cache"


def data_root() -> Path:
    """The folder holding ``coco_sample/``, ``pope/``, ``mme/``, ``chair/`` (see module docstring for the order)."""
    return locate()[0]


# --------------------------------------------------------------------------------------------------------------
# Verification with a (size, mtime) stamp cache
# --------------------------------------------------------------------------------------------------------------
class _Stamps:
    """Maps absolute path -> [size, mtime_ns, sha256] of files already hashed. Lives in the user cache; if that
    is not writable, verification still works, it only hashes every time."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data: dict[str, list] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.data = {}
        self.dirty = False

    def known(self, file: Path, st: os.stat_result, sha256: str) -> bool:
        return self.data.get(str(file)) == [st.st_size, st.st_mtime_ns, sha256]

    def add(self, file: Path, st: os.stat_result, sha256: str) -> None:
        self.data[str(file)] = [st.st_size, st.st_mtime_ns, sha256]
        self.dirty = True

    def forget(self, file: Path) -> None:
        self.dirty |= self.data.pop(str(file), None) is not None

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            atomic_write_json(self.path, self.data)
            self.dirty = False
        except OSError:
            pass


def _stamps() -> _Stamps:
    return _Stamps(cache_root() / "verified.json")


@dataclass(frozen=True)
class FileStatus:
    """Outcome of checking one registered file: ``status`` is ok / missing / size / sha256."""

    entry: FileEntry
    path: Path
    status: str
    got: str | None = None  # the size or hash found when it differs

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        if self.status == "missing":
            return f"{self.path}: missing"
        if self.status == "size":
            return f"{self.path}: size {self.got} bytes, expected {self.entry.size}"
        if self.status == "sha256":
            return f"{self.path}: SHA-256 {self.got}, expected {self.entry.sha256}"
        return f"{self.path}: ok"


def _check(entry: FileEntry, root: Path, stamps: _Stamps | None) -> FileStatus:
    path = root / entry.path
    try:
        st = path.stat()
    except FileNotFoundError:
        return FileStatus(entry, path, "missing")
    if st.st_size != entry.size:
        return FileStatus(entry, path, "size", str(st.st_size))
    if stamps is not None and stamps.known(path, st, entry.sha256):
        return FileStatus(entry, path, "ok")
    got = sha256_file(path)
    if got != entry.sha256:
        if stamps is not None:
            stamps.forget(path)
        return FileStatus(entry, path, "sha256", got)
    if stamps is not None:
        stamps.add(path, st, got)
    return FileStatus(entry, path, "ok")


def verify(names: Iterable[str] | None = None, *, root: Path | str | None = None, use_stamps: bool = False,
           registry_file: Path | str = REGISTRY_FILE) -> list[FileStatus]:
    """Check registered files without changing anything; by default re-hash every file (ignore the stamp cache)."""
    root = Path(root) if root is not None else data_root()
    names = list(names) if names is not None else list(datasets(registry_file))
    stamps = _stamps() if use_stamps else None
    out = [_check(e, root, stamps) for n in names for e in entries(n, registry_file)]
    if stamps is not None:
        stamps.save()
    return out


# --------------------------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------------------------
def fetch(name: str, *, root: Path | str | None = None, mirror: str | None = None, progress: bool = True,
          registry_file: Path | str = REGISTRY_FILE) -> Path:
    """Return the folder of dataset `name` (``coco-sample``, ``pope``, ``mme``, ``chair``) after verifying every file.

    Missing or corrupt files are downloaded when the root is writable by policy (user cache, ``$VLMFLOW_DATA``, or
    an explicit `root`); otherwise, or when no source works, raises DataNotAvailableError naming the file.
    """
    return fetch_all([name], root=root, mirror=mirror, progress=progress, registry_file=registry_file)[name]


def fetch_all(names: Iterable[str] | None = None, *, root: Path | str | None = None, mirror: str | None = None,
              progress: bool = True, registry_file: Path | str = REGISTRY_FILE) -> dict[str, Path]:
    """`fetch` for several datasets (default: all registered); returns name -> folder."""
    if root is not None:
        root, source = Path(root), "argument"
    else:
        root, source = locate()
    names = list(names) if names is not None else list(datasets(registry_file))
    mirror = mirror or os.environ.get(ENV_MIRROR) or None
    todo = [e for n in names for e in entries(n, registry_file)]  # validates names first

    stamps = _stamps()
    try:
        bad = [s for s in (_check(e, root, stamps) for e in todo) if not s.ok]
        if bad and source == "checkout":
            raise DataNotAvailableError(
                f"{bad[0].describe()} (and {len(bad) - 1} more problem(s)) in the shared data folder {root}, which "
                f"vlmflow never writes to; restore it from {_first_source(bad[0].entry)}, or set {ENV_DATA} to a "
                f"folder with the same layout (see {root / 'SOURCES.md'})")
        if bad:
            _download_all([s.entry for s in bad], root, mirror, progress, stamps)
    finally:
        stamps.save()
    return {n: root / folder_of(n) for n in names}


def _first_source(entry: FileEntry) -> str:
    return entry.urls[0] if entry.urls else f"its origin ({entry.derived_from})"


def _how_to_provide(entry: FileEntry) -> str:
    return (f"provide it by setting {ENV_DATA} to a folder holding {entry.path} (a copy of vlmflow's shared/data "
            f"layout), or {ENV_MIRROR} to a URL serving that layout")


def _download_all(todo: list[FileEntry], root: Path, mirror: str | None, progress: bool, stamps: _Stamps) -> None:
    from tqdm.auto import tqdm

    from vlmflow.progress import bar_disabled

    with tqdm(total=sum(e.size for e in todo), unit="B", unit_scale=True, desc=f"fetching {len(todo)} file(s)",
              disable=bar_disabled(progress)) as bar:
        for entry in todo:
            dest = root / entry.path
            if dest.exists():  # a wrong copy in a writable folder: replace it
                dest.unlink()
                stamps.forget(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _download_entry(entry, dest, mirror, bar)
            st = dest.stat()
            stamps.add(dest, st, entry.sha256)


def _download_entry(entry: FileEntry, dest: Path, mirror: str | None, bar) -> None:
    if mirror:
        candidates = [(f"{mirror.rstrip('/')}/{entry.path}", None)]
    elif entry.urls:
        candidates = [(u, entry.member) for u in entry.urls]
    else:
        raise DataNotAvailableError(
            f"{entry.path} has no public download (it is derived: {entry.derived_from}); {_how_to_provide(entry)}")

    failures = []
    for url, member in candidates:
        try:
            if member is None:
                part = _http_get(url, dest.with_name(dest.name + ".part"), entry.size, bar)
            else:
                part = _from_archive(url, member, dest, bar)
        except (TimeoutError, urllib.error.URLError, OSError, zipfile.BadZipFile, KeyError) as exc:
            failures.append(f"{url}: {_reason(exc)}")
            continue
        got = sha256_file(part)
        if got != entry.sha256:
            part.unlink()
            if member is not None:  # the cached archive is the likely culprit; fetch it afresh next time
                _archive_path(url).unlink(missing_ok=True)
            raise DataNotAvailableError(
                f"{entry.path} downloaded from {url} has SHA-256 {got}, expected {entry.sha256}; the file was "
                f"deleted. The source may have changed; {_how_to_provide(entry)}")
        os.replace(part, dest)  # atomic: dest is either absent or complete and verified
        return
    raise DataNotAvailableError(
        f"cannot download {entry.path}: " + "; ".join(failures) + f". Without network access, {_how_to_provide(entry)}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, KeyError):
        return f"archive has no member {exc.args[0]!r}"
    return f"{type(exc).__name__}: {exc}"


def _http_get(url: str, part: Path, expected_size: int | None, bar) -> Path:
    """Download `url` into `part`, resuming from the bytes already there; returns `part` (complete)."""
    start = part.stat().st_size if part.exists() else 0
    if expected_size is not None and start > expected_size:  # not a prefix of what we want
        part.unlink()
        start = 0
    if expected_size is not None and start == expected_size:
        bar.update(start)
        return part
    headers = {"User-Agent": "vlmflow-data-fetch"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is complete (size unknown beforehand)
            return part
        raise
    with resp:
        resumed = start > 0 and resp.status == 206
        bar.update(start if resumed else 0)
        with open(part, "ab" if resumed else "wb") as f:
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    return part


def _archive_path(url: str) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_root() / "archives" / f"{key}-{url.rsplit('/', 1)[-1]}"


def _from_archive(url: str, member: str, dest: Path, bar) -> Path:
    """Fetch the zip at `url` into the user cache (resumably), extract `member` next to `dest` as a .part file."""
    archive = _archive_path(url)
    archive.parent.mkdir(parents=True, exist_ok=True)
    if not archive.exists():
        part = _http_get(url, archive.with_name(archive.name + ".part"), None, _NullBar())
        os.replace(part, archive)
    out = dest.with_name(dest.name + ".part")
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile:
        archive.unlink()  # a truncated or wrong archive: fetch it again next time
        raise
    bar.update(out.stat().st_size)
    return out


class _NullBar:
    def update(self, n: int) -> None:
        pass
