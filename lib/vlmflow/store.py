"""The sweep result store: tidy parquet tables with provenance, resumable, crash-safe, shardable.

Layout of a result folder::

    manifest.json                      settings (what determines the numbers), their hash, provenance
    parts/<image>.<keys>.parquet       the ``results`` rows of one image for one set of spec ids (one row per config)
    parts/<image>.<keys>.attention.parquet   recorded-attention summaries of the same (optional)

Where it sits: ``vlmflow sweep`` (``vlmflow.cli.sweep``) runs the engine (``vlmflow.sweep``) per image and hands the
rows (``sweep.result_rows`` / ``sweep.attention_rows``) to :meth:`ResultStore.write_part`; notebooks read them back
with :func:`load_results`.

Guarantees:
- **Keyed:** a row is keyed by ``(image, spec_id)``; :meth:`ResultStore.done` lists the keys on disk, so a rerun
  computes only what is missing (also when a preset gains configurations).
- **Never mixed:** the manifest holds a hash of the settings (model id + revision / weights hash, question,
  generation settings, seed, data id, library versions); opening a folder with other settings raises
  :class:`SettingsMismatchError` naming the keys that differ. Use another folder for other settings.
- **Atomic:** a part is written to ``parts/.tmp-*`` in the same folder, flushed and fsynced, then ``os.replace``d
  to its final name and the folder fsynced. The attention part goes first and the results part last: a results part
  on disk is the commit mark of its keys. A process killed at any point (SIGKILL) leaves at most a temp file (removed
  on the next open) or an attention part without its results part (ignored, and overwritten by the rerun, whose part
  names are deterministic), never a torn or duplicated row.
- **Shards:** ``--shard i/n`` takes every n-th image (:func:`shard_of`); :func:`merge` joins shard folders into one,
  verifying identical settings hashes and refusing conflicting rows.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmflow.atomic import TMP_PREFIX, atomic_write, atomic_write_json
from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd

MANIFEST = "manifest.json"
PARTS = "parts"
TABLES = ("results", "attention")
KEY = ("image", "spec_id")


class StoreError(VlmflowError):
    pass


class SettingsMismatchError(StoreError):
    """A result folder holds results of other settings."""


def settings_hash(settings: dict) -> str:
    """sha256 (16 hex digits) of the settings as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions() -> dict[str, str]:
    import torch
    import transformers

    import vlmflow

    return {"vlmflow": vlmflow.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def provenance(model, data: str, **params) -> dict:
    """The key of a stored result: the model as given (name), its ``weights_fingerprint``, the data (a
    ``vlmflow.data.resolve`` ``data_id`` or name), every parameter that changes a number (``params``: seed, device,
    dtype, n_images...) and the library versions. :func:`cached_table` and the notebooks' stored results use it."""
    name = str(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name", type(model).__name__)
    return {"model": name, "weights": weights_fingerprint(model), "data": data, **params, **library_versions()}


def cached_table(file: str | os.PathLike, key: dict, compute) -> pd.DataFrame:
    """The parquet table ``file`` when its sidecar ``<stem>.provenance.json`` holds ``key`` (a :func:`provenance`),
    else ``compute()`` (-> DataFrame) written atomically, table first and sidecar last, so that a run killed in
    between recomputes instead of reading a table under another key. Prints which of the two happened."""
    import pandas as pd

    file = Path(file)
    sidecar = file.with_name(f"{file.stem}.provenance.json")
    key = json.loads(json.dumps(key, default=str))  # as stored: JSON types
    stored = json.loads(sidecar.read_text()) if sidecar.is_file() else None
    if stored == key and file.is_file():
        print(f"reusing {file} (same provenance)")
        return pd.read_parquet(file)
    sidecar.unlink(missing_ok=True)
    table = compute()
    atomic_write(file, lambda f: table.to_parquet(f))
    atomic_write_json(sidecar, key, indent=1)
    print(f"stored {file}")
    return table


def weights_fingerprint(model) -> str:
    """The one identity of a model's weights in every provenance, the same whether the model is given loaded (a
    transformers model or a ``VLM``) or by name (``"toy"``, a local folder, a hub id), so that a result computed by
    the CLI and one asked for by a notebook before loading anything get the same key:

    - a local folder (``"toy"`` is ``vlmflow.model.toy_model_path()``): ``sha256:`` over config.json and each weight
      file's name, size and bytes (files above 256 MiB: their first and last 16 MiB), read without loading;
    - a hub id: ``revision:<commit>`` of the snapshot in the Hugging Face cache, else ``hub:<id>`` (not downloaded);
    - a model built in memory (no folder, no hub id): ``tensors-sha256:`` over its state dict."""
    if isinstance(model, (str, os.PathLike)):
        return (_named_fingerprint(str(model)) or f"hub:{model}") + _plant_suffix(_named_plant(str(model)))
    if hasattr(model, "adapter"):  # a VLM: its transformers model, and the plant it runs with
        return weights_fingerprint(model.model) + _plant_suffix(model.planted)
    revision = getattr(model.config, "_commit_hash", None)
    if revision:
        return f"revision:{revision}"
    name = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    found = _named_fingerprint(str(name)) if name else None
    if found:
        return found
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return f"tensors-sha256:{h.hexdigest()[:16]}"


def _plant_suffix(knockouts) -> str:
    """A planted model runs under its knockouts (``vlmflow.plant``): they are part of what computes every number, so
    the fingerprint names them (the same for ``vf.load("toy:window")`` and the name); none: no suffix."""
    return "+plant:" + "&".join(k.spec_id for k in knockouts) if knockouts else ""


def _named_plant(name: str) -> tuple:
    """The plant ``vf.load(name)`` applies by default (from the model folder's plant.json; none for a hub id)."""
    from vlmflow.model import is_toy_name, toy_model_folder
    from vlmflow.plant import read_plant

    folder = toy_model_folder(name) if is_toy_name(name) else Path(name)
    plant = read_plant(folder) if folder.is_dir() else None
    return plant.knockouts if plant is not None else ()


def _named_fingerprint(name: str) -> str | None:
    """``weights_fingerprint`` of a model named by folder or hub id; None for a hub id that is not in the cache."""
    from vlmflow.model import is_toy_name, toy_model_folder

    if is_toy_name(name):
        name = str(toy_model_folder(name))
    folder = Path(name)
    if folder.is_dir():
        return _folder_fingerprint(folder)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repo id (a missing folder, a typo): not in the cache
        return None
    if isinstance(cached, str):  # .../snapshots/<commit>/config.json
        return f"revision:{Path(cached).parent.name}"
    return None


def _folder_fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if not p.is_file() or not (p.name == "config.json" or p.suffix in (".safetensors", ".bin", ".pt")):
            continue
        size = p.stat().st_size
        h.update(f"{p.name}:{size}".encode())
        with open(p, "rb") as f:
            if size <= 256 << 20:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(f.read(16 << 20))
                f.seek(size - (16 << 20))
                h.update(f.read())
    return f"sha256:{h.hexdigest()[:16]}"


def shard_of(spec: str | None) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n; None -> (0, 1)."""
    if spec is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise StoreError(f"bad shard {spec!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name))[:80] or "_"


def _write_parquet(path: Path, rows: list[dict]) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False)
    atomic_write(path, lambda f: pq.write_table(table, f))


class ResultStore:
    """One result folder; see the module docstring. ``settings`` determine results (hashed); ``provenance`` is kept
    beside them (the first writer's: hostnames, dates and such may differ between shards)."""

    def __init__(self, folder: str | os.PathLike, settings: dict, provenance: dict | None = None):
        self.folder = Path(folder)
        self.parts = self.folder / PARTS
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.hash = settings_hash(self.settings)
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"result folder {self.folder} is a file; give a new folder or one from an earlier run")
        self.parts.mkdir(parents=True, exist_ok=True)
        for tmp in self.parts.glob(f"{TMP_PREFIX}*"):  # left by a killed writer: never a committed part
            tmp.unlink(missing_ok=True)
        manifest = self.folder / MANIFEST
        if manifest.is_file():
            old = read_manifest(self.folder)
            if old["settings_hash"] != self.hash:
                diff = sorted(k for k in set(old["settings"]) | set(self.settings)
                              if old["settings"].get(k) != self.settings.get(k))
                raise SettingsMismatchError(
                    f"{self.folder} holds results of other settings (hash {old['settings_hash']}, this run "
                    f"{self.hash}); differing: "
                    + "; ".join(f"{k}: {old['settings'].get(k)!r} != {self.settings.get(k)!r}" for k in diff)
                    + ". Use another --out folder for these settings."
                )
            self.provenance = old.get("provenance", {})
        else:
            self.provenance = dict(provenance or {})
            body = {"settings_hash": self.hash, "settings": self.settings, "provenance": self.provenance}
            atomic_write(manifest, lambda f: f.write(json.dumps(body, indent=2, sort_keys=True,
                                                                 default=str).encode()))

    def done(self) -> set[tuple[str, str]]:
        """The (image, spec_id) keys already stored."""
        import pyarrow.parquet as pq

        keys: set[tuple[str, str]] = set()
        for path in _result_parts(self.folder):
            t = pq.read_table(path, columns=list(KEY))
            keys.update(zip(t.column("image").to_pylist(), t.column("spec_id").to_pylist()))
        return keys

    def write_part(self, image: str, rows: Sequence[dict], attention: Sequence[dict] = ()) -> Path | None:
        """Commit the rows of one image (every row's ``image`` must equal ``image``). Returns the results part path."""
        if not rows:
            return None
        bad = [r.get("image") for r in rows if r.get("image") != image]
        if bad:
            raise StoreError(f"write_part({image!r}): rows of other images {bad[:3]!r}")
        specs = sorted(r["spec_id"] for r in rows)
        if len(set(specs)) != len(specs):
            raise StoreError(f"write_part({image!r}): duplicate spec ids in one part")
        stem = f"{_safe(image)}.{hashlib.sha256(json.dumps(specs).encode()).hexdigest()[:12]}"
        if attention:
            _write_parquet(self.parts / f"{stem}.attention.parquet", list(attention))
        path = self.parts / f"{stem}.parquet"
        _write_parquet(path, list(rows))
        return path


def read_manifest(folder: str | os.PathLike) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise StoreError(f"{folder}: no {MANIFEST}; not a vlmflow sweep result folder")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path}: unreadable manifest ({exc})") from exc


def _result_parts(folder: Path) -> list[Path]:
    return sorted(p for p in (Path(folder) / PARTS).glob("*.parquet")
                  if not p.name.startswith(".") and not p.name.endswith(".attention.parquet"))


def holds_results(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` has committed result parts (a failed command keeps them: its rerun resumes from them)."""
    return any((Path(folder) / PARTS).glob("*.parquet"))


def load_results(folder: str | os.PathLike, table: str = "results") -> "pd.DataFrame":
    """One table of a result folder as a DataFrame, sorted by (image, spec_id[, position, layer]); ``table`` is
    ``"results"`` or ``"attention"``. The manifest is in ``df.attrs["manifest"]``."""
    import pandas as pd

    if table not in TABLES:
        raise StoreError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
    manifest = read_manifest(folder)
    parts = _result_parts(Path(folder))
    if table == "attention":
        parts = [p.with_name(p.name[: -len(".parquet")] + ".attention.parquet") for p in parts]
        parts = [p for p in parts if p.is_file()]
    frames = [pd.read_parquet(p) for p in parts]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(KEY))
    order = [c for c in ("image", "spec_id", "position", "layer") if c in df.columns]
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    df.attrs["manifest"] = manifest
    return df


def merge(folders: Iterable[str | os.PathLike], out: str | os.PathLike) -> int:
    """Join shard folders into ``out`` (created, or an existing folder of the same settings). Parts are copied
    atomically; a key found twice must hold identical rows (else StoreError). Returns the number of result rows."""
    import shutil

    import pandas as pd

    folders = [Path(f) for f in folders]
    if not folders:
        raise StoreError("merge: name at least one shard folder")
    manifests = [read_manifest(f) for f in folders]
    hashes = {m["settings_hash"] for m in manifests}
    if len(hashes) != 1:
        detail = ", ".join(f"{f}: {m['settings_hash']}" for f, m in zip(folders, manifests))
        raise SettingsMismatchError(f"merge: the shards were run with different settings ({detail})")
    store = ResultStore(out, manifests[0]["settings"], manifests[0].get("provenance"))
    seen: dict[tuple[str, str], dict] = {}
    for key, row in _rows_by_key(Path(out)):
        seen[key] = row
    for folder in folders:
        if folder.resolve() == Path(out).resolve():
            continue
        for part in _result_parts(folder):
            df = pd.read_parquet(part)
            rows = df.to_dict("records")
            fresh = []
            for row in rows:
                key = (row["image"], row["spec_id"])
                if key in seen:
                    if _canon(seen[key]) != _canon(row):
                        raise StoreError(f"merge: {key} differs between {folder} and an earlier shard")
                    continue
                seen[key] = row
                fresh.append(row)
            if not fresh:
                continue
            if len(fresh) == len(rows):  # the whole part is new: copy it (and its attention part) as it is
                att = part.with_name(part.name[: -len(".parquet")] + ".attention.parquet")
                if att.is_file():
                    atomic_write(store.parts / att.name, lambda f, a=att: shutil.copyfileobj(open(a, "rb"), f))
                atomic_write(store.parts / part.name, lambda f, p=part: shutil.copyfileobj(open(p, "rb"), f))
            else:
                store.write_part(fresh[0]["image"], fresh)
    return len(seen)


def _rows_by_key(folder: Path):
    import pandas as pd

    for part in _result_parts(folder):
        for row in pd.read_parquet(part).to_dict("records"):
            yield (row["image"], row["spec_id"]), row


def _canon(row: dict) -> str:
    def plain(v: Any):
        if hasattr(v, "tolist"):
            return v.tolist()
        return v

    return json.dumps({k: plain(v) for k, v in row.items()}, sort_keys=True, default=str)


__all__ = ["ResultStore", "SettingsMismatchError", "StoreError", "library_versions", "load_results", "merge",
           "read_manifest", "settings_hash", "shard_of", "weights_fingerprint"]
