"""Knockout sweeps over items that each carry their own question: one store, many questions.

Where it sits: ``vlmflow.sweep_scores.stored_sweep`` runs one question over a data set's images. The chapters on the
open questions ask per-scene questions ("is there a red circle ?", "where is the blue ring ?") and draw scenes from
other scene settings (more objects, clutter), so their unit is an *item*: an image, a question and labels (kind,
phrasing, axis, level...). :func:`stored_item_sweep` runs configurations (``vlmflow.sweep.SweepConfig``, e.g. from
``vlmflow.presets``) on items through the same engine and the one experiment path (``vlmflow.runner.Experiment``: a resumable
``vlmflow.store.ResultStore`` keyed by ``store.provenance``, items as its image keys), grouping items that share a question so that the engine batches them, and computes only the
(item, configuration) keys the store lacks; a rerun with everything stored loads no model.

The store's settings name the item rule (``items_id``: how items are drawn from their data, e.g.
``"query-kinds-v1"``), not the item list, so a run with more items reuses the stored ones. :func:`item_key` puts
the question itself into the key, so rows of another question are never read back as this item's.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.sweep import SweepConfig


class ItemSweepError(VlmflowError):
    """Items that cannot be swept as given (no items, duplicate keys)."""


def item_key(image: str, question: str, *parts: str) -> str:
    """The store key of an item: its image, any labels that tell items of one image apart, and the question."""
    return "|".join([image, *map(str, parts), question])


@dataclass(frozen=True)
class SweepItem:
    """One (image, question) unit of an item sweep: ``key`` names it in the store (unique), ``image`` the image it
    is about (the bootstrap's cluster), ``load() -> PIL image``, ``labels`` become columns of its rows."""

    key: str
    image: str
    question: str
    load: Callable[[], Any] = field(compare=False, repr=False)
    labels: tuple[tuple[str, Any], ...] = ()


def stored_item_sweep(folder: str | Path, items: Sequence[SweepItem], *, model: str, items_id: str,
                      configs_for: Callable[[int], Sequence["SweepConfig"]], device: str = "cpu",
                      dtype: str | None = None, max_new_tokens: int = 64, batch_size: int = 32, progress: bool = True,
                      extra_settings: Mapping[str, Any] | None = None,
                      ) -> tuple["pd.DataFrame", "pd.DataFrame", int]:
    """Run ``configs_for(n_layers)`` on every item into ``folder/items-<settings hash>``; -> (result rows, attention
    rows, n_layers), both restricted to these items and configurations, with the items' ``image``, ``question`` and
    labels as columns (the store's own ``image`` column, the item key, is renamed ``item``)."""
    import pandas as pd

    from vlmflow.runner import Experiment, dtype_key, progress_bar
    from vlmflow.store import load_results, provenance
    from vlmflow.sweep import SweepImage, run_sweep

    keys = [it.key for it in items]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ItemSweepError(f"item keys must be unique; repeated: {dup[:5]}")
    if not items:
        raise ItemSweepError("stored_item_sweep needs at least one item")
    settings = provenance(model, "items", items_id=items_id, max_new_tokens=int(max_new_tokens), decoding="greedy",
                          device=device, dtype=dtype_key(dtype), **dict(extra_settings or {}))
    exp = Experiment(folder, settings, kind="items", model=model, device=device, dtype=dtype)
    configs = list(configs_for(exp.n_layers))
    missing = [it for it, _ in exp.missing((it, it.key, [c.spec_id for c in configs]) for it in items)]
    path = exp.folder
    if missing:
        by_question: dict[str, list[SweepItem]] = {}
        for it in missing:
            by_question.setdefault(it.question, []).append(it)
        with progress_bar(None, f"item sweep ({len(configs)} configs)", progress, total=len(missing),
                          unit="item") as bar:
            for question, group in by_question.items():
                run_sweep(exp.vlm, [SweepImage(it.key, it.load) for it in group], configs, exp.store,
                          question=question, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=False)
                bar.update(len(group))
    else:
        print(f"reusing {path}: every item and configuration is stored")
    n_layers = exp.n_layers
    specs = {c.spec_id for c in configs}
    meta = pd.DataFrame([{"item": it.key, "image": it.image, "question": it.question, **dict(it.labels)}
                         for it in items])

    def read(table: str) -> "pd.DataFrame":
        df = load_results(path, table)
        if df.empty:
            return df
        df = df[df.image.isin(set(keys)) & df.spec_id.isin(specs)].rename(columns={"image": "item"})
        clash = [c for c in meta.columns if c != "item" and c in df.columns]
        return df.drop(columns=clash).merge(meta, on="item", how="left").reset_index(drop=True)

    rows, att = read("results"), read("attention")
    rows.attrs.update(store=str(path), computed_items=len(missing))
    return rows, att, int(n_layers)


__all__ = ["ItemSweepError", "SweepItem", "stored_item_sweep"]
