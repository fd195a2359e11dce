"""The one experiment path: a stored, resumable, atomic run keyed by ``vlmflow.store.provenance(...)``.

Every stored result goes through :class:`Experiment`: ``vlmflow sweep`` and ``vf.sweep`` (``vlmflow.sweep_run``), the
notebooks' ``sweep_scores.stored_sweep``, ``localize.stored_localization``, ``reprompt.stored_evaluate`` and
``item_sweep.stored_item_sweep`` (sweeps where every item asks its own question). Each
builds its key with ``store.provenance`` (model name, weights fingerprint, data id by content, every parameter that
changes a number, library versions) and hands it here; this module decides where the results live, opens the
``vlmflow.store.ResultStore`` (atomic parts, refusal of other settings), lists what is missing, and loads the model
only when something is.

Where the results live (:func:`locate`): a *root* folder holds one folder per key, ``<root>/<kind>-<settings hash>``
(``kind``: ``sweep``, ``localize``, ``reprompt``, ``items``), so that a notebook's ``results_dir`` keeps every parameter set
apart. A root that is itself a result folder (a ``vlmflow sweep --out`` folder handed to a notebook) is used as it
is: read back when it holds the same key, refused (naming the settings that differ) when it holds another. The CLI
and ``vf.sweep`` name their folder exactly (``exact=True``), with the same refusal. So the same experiment run from
the CLI and then from a notebook reads the first run's results (tests/integration/test_one_experiment_path.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vlmflow.model import VLM
    from vlmflow.store import ResultStore


def dtype_key(dtype) -> str:
    """The dtype as it goes into a key: the requested name (``"float16"``...), ``"None"`` for the checkpoint's own
    (which the weights fingerprint pins), a torch dtype by its name."""
    return str(dtype).removeprefix("torch.")


def requested(model, device: str | None = None, dtype=None) -> tuple[str, Any]:
    """(device, dtype) as asked for: the arguments, else what ``vlmflow.load`` was given for a loaded ``VLM``
    (``VLM.requested``), else what a wrapped model runs with."""
    if isinstance(model, (str, os.PathLike)):
        return device or "cpu", dtype
    asked = getattr(model, "requested", None) or {}
    if device is None:
        device = asked.get("device") or model.device.type
    if dtype is None:
        dtype = asked["dtype"] if "dtype" in asked else next(model.model.parameters()).dtype
    return device, dtype


def locate(root: str | os.PathLike, kind: str, settings_hash: str) -> Path:
    """``root`` when it is itself a result folder (the store then reads it, or refuses it when it holds another key,
    naming the settings that differ), else ``root/<kind>-<settings_hash>``."""
    from vlmflow.store import MANIFEST

    root = Path(root)
    return root if (root / MANIFEST).is_file() else root / f"{kind}-{settings_hash}"


class Experiment:
    """One keyed experiment: its folder, its store, and the model, loaded only when asked for.

    root: the results folder (``exact=False``) or the result folder itself (``exact=True``: ``--out``); settings: the
    key (``store.provenance(...)``); kind: the folder prefix; model / device / dtype: what :attr:`vlm` loads, unless a
    loaded ``vlm`` is given; provenance: kept beside the results (not hashed), with the decoder layer count added, so
    that a rerun with everything stored needs no model at all (:attr:`n_layers`).
    """

    def __init__(self, root, settings: dict, *, kind: str, model=None, device: str = "cpu", dtype=None,
                 vlm: VLM | None = None, exact: bool = False, provenance: dict | None = None):
        import json

        from vlmflow.store import settings_hash

        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        self.hash = settings_hash(self.settings)
        self.folder = Path(root) if exact else locate(root, kind, self.hash)
        self.model = model if model is not None else getattr(vlm, "name", None)
        self.device, self.dtype = device, dtype
        self._vlm = vlm
        self._n_layers: int | None = None
        self._store: ResultStore | None = None
        self.provenance = {"model": self.model, **(provenance or {})}

    @property
    def vlm(self) -> VLM:
        if self._vlm is None:
            from vlmflow.model import load

            self._vlm = load(self.model, device=self.device, dtype=self.dtype)
        return self._vlm

    @property
    def n_layers(self) -> int:
        """The decoder layer count: from the stored provenance, else from the model (which loads it)."""
        if self._n_layers is None:
            from vlmflow.store import MANIFEST, read_manifest

            stored = read_manifest(self.folder) if (self.folder / MANIFEST).is_file() else {}
            n = stored.get("provenance", {}).get("n_layers")
            self._n_layers = int(n) if n is not None else self.vlm.num_layers
        return self._n_layers

    @property
    def store(self) -> ResultStore:
        """The result store (created on first use; a folder of another key is refused here)."""
        if self._store is None:
            from vlmflow.store import ResultStore

            layers = {"n_layers": self._n_layers} if self._n_layers is not None else (
                {"n_layers": self._vlm.num_layers} if self._vlm is not None else {})
            self._store = ResultStore(self.folder, self.settings, {**self.provenance, **layers})
        return self._store

    def missing(self, units: Iterable[tuple[Any, str, Sequence[str]]]) -> list[tuple[Any, list[str]]]:
        """(unit, its spec ids not stored yet) for each ``(unit, image key, spec ids)`` that lacks any."""
        done = self.store.done()
        out = []
        for unit, key, specs in units:
            lacking = [s for s in specs if (key, s) not in done]
            if lacking:
                out.append((unit, lacking))
        return out

    def rows(self, keys: Iterable[str], specs: Iterable[str], table: str = "results"):
        """The stored rows of exactly these image keys and spec ids (other runs' rows in the folder left out)."""
        from vlmflow.store import load_results

        rows = load_results(self.folder, table)
        keys, specs = set(keys), set(specs)
        return rows[rows.image.isin(keys) & rows.spec_id.isin(specs)].reset_index(drop=True)


def progress_bar(items, desc: str, progress: bool, **kw):
    """tqdm over ``items`` on the terminal, silent in the book (``vlmflow.progress``)."""
    from tqdm.auto import tqdm

    from vlmflow.progress import bar_disabled

    return tqdm(items, desc=desc, disable=bar_disabled(progress), **kw)


__all__ = ["Experiment", "dtype_key", "locate", "progress_bar", "requested"]
