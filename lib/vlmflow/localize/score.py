"""Scoring: one generation's naming tokens -> tidy rows (peak, hit, chance, mass ratio per layer and tolerance),
layer bands, and accuracy tables with bootstrap CIs. Reads a ``Generation``'s ``AttentionRecord``; masks come from
``vlmflow.localize.masks``."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmflow.heatmap import head_aggregate, token_position
from vlmflow.localize.base import ROWS, LocalizationError
from vlmflow.localize.masks import MaskTokens, mass_inside

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.adapters.geometry import ImageGeometry
    from vlmflow.localize.mentions import Mention
    from vlmflow.model import Generation
    from vlmflow.record import AttentionRecord


def record_for(heads: str | Sequence[int]):
    """The ``Record`` localization needs for this head aggregation."""
    from vlmflow.record import Record

    return Record(rows=ROWS, layers=None, heads="mean" if heads == "mean" else "all")


@dataclass
class ObjectTruth:
    """Ground truth for one category (toy: a shape with attributes) in one image: its instance masks."""

    annotation_ids: list[int]
    parts: list[MaskTokens]

    @property
    def present(self) -> bool:
        return bool(self.parts)


def localize_generation(gen: "Generation", geometry: "ImageGeometry", found: Sequence[Mention],
                        truth: dict[Mention, ObjectTruth] | Any, *, tolerances: Sequence[float], unit: str = "px",
                        heads: str | Sequence[int] = "mean", row: str = "predicting", instances: str = "any",
                        image_id: Any = None) -> list[dict]:
    """One row per (mention, layer, tolerance): the peak, hit, chance, mass ratio. ``truth(mention) -> ObjectTruth``
    (a callable or a dict). Mentions of objects that are not in the image (hallucinated) get ``present=False`` and
    NaN scores, and are left out of accuracies by :func:`accuracy_table`."""
    rec: AttentionRecord | None = gen.record
    if rec is None:
        raise LocalizationError("the generation carries no attention record: generate with record=record_for(heads)")
    if instances not in ("any", "nearest"):
        raise LocalizationError(f"instances must be 'any' or 'nearest', got {instances!r}")
    if rec.image_map.shape[-1] != geometry.n_tokens:
        raise LocalizationError(f"the record has {rec.image_map.shape[-1]} image tokens but the geometry "
                                f"{geometry.n_tokens} ({geometry.method})")
    maps = head_aggregate(rec.image_map, heads)  # [R, L, N]
    positions = rec.row_positions.tolist()
    centres = geometry.box_centers()
    lookup = truth if callable(truth) else truth.__getitem__
    rows = []
    for m in found:
        pos = token_position(gen.prompt_length, m.token, row)
        if pos not in positions:  # e.g. the last token of a run cut at max_new_tokens is never fed back
            continue
        r = positions.index(pos)
        obj: ObjectTruth = lookup(m)
        union = MaskTokens.union(obj.parts) if obj.present else None
        for li, layer in enumerate(rec.layers):
            a = maps[r, li]
            peak = int(np.nanargmax(a))
            base = {"image_id": image_id, "object": m.name, "category": m.category, "word": m.word,
                    "occurrence": m.occurrence, "token": m.token, "position": pos, "layer": int(layer),
                    "peak_token": peak, "peak_x": float(centres[peak, 0]) if geometry.valid[peak] else np.nan,
                    "peak_y": float(centres[peak, 1]) if geometry.valid[peak] else np.nan,
                    "present": obj.present, "n_instances": len(obj.parts), "instances": instances}
            if not obj.present:
                for tol in tolerances:
                    rows.append({**base, "tolerance": float(tol), "unit": unit, "hit": np.nan, "chance": np.nan,
                                 "chance_area": np.nan, "distance": np.nan, "nearest_annotation": None,
                                 "mass_in": np.nan, "mask_share": np.nan, "mass_ratio": np.nan})
                continue
            dists = [p.distance(unit)[peak] for p in obj.parts]
            k = int(np.argmin(dists))
            target = union if instances == "any" else obj.parts[k]
            mass_in, share = mass_inside(a, target)
            for tol in tolerances:
                hits = target.hits(tol, unit)
                rows.append({**base, "tolerance": float(tol), "unit": unit,
                             "hit": bool(union.hits(tol, unit)[peak]), "chance": float(hits.mean()),
                             "chance_area": target.area_share(tol) if unit == "px" else np.nan,
                             "distance": float(dists[k]), "nearest_annotation": obj.annotation_ids[k],
                             "mass_in": mass_in, "mask_share": share,
                             "mass_ratio": mass_in / share if share > 0 else np.nan})
    return rows


def layer_bands(n_layers: int, width: int | None = None) -> list[tuple[int, int]]:
    """Half-open [start, stop) bands of ``width`` layers (default ceil(L/8), at least 2: 10 for an 80-layer model as
    in the paper's figure, 4 for 32 layers, 2 for the 8-layer toy model)."""
    width = width or max(2, math.ceil(n_layers / 8))
    return [(s, min(s + width, n_layers)) for s in range(0, n_layers, width)]


def band_label(layer: int, bands: Sequence[tuple[int, int]]) -> str:
    for s, e in bands:
        if s <= layer < e:
            return f"{s}-{e - 1}"
    raise LocalizationError(f"layer {layer} is in no band of {list(bands)}")


def accuracy_table(objects: "pd.DataFrame", by: str = "band", subset: str = "all", tolerance: float | None = None,
                   n_resamples: int = 1000, seed: int = 0) -> "pd.DataFrame":
    """Accuracy per ``by`` ("layer" or "band") and tolerance, with image-clustered bootstrap CIs, next to the mean
    chance rate and mean mass ratio. subset: "all" named objects present in the image, or "lost" (the paper's
    subset: lost under KO image->generated)."""
    import pandas as pd

    from vlmflow.stats import groupby_ci

    df = objects[objects["present"].astype(bool)]
    if subset == "lost":
        df = df[df["lost"].fillna(False).astype(bool)]
    elif subset != "all":
        raise LocalizationError(f"subset must be 'all' or 'lost', got {subset!r}")
    if tolerance is not None:
        df = df[df["tolerance"] == float(tolerance)]
    cols = [by, "tolerance", "accuracy", "accuracy_low", "accuracy_high", "chance", "mass_ratio", "n", "n_images"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(accuracy=df["hit"].astype(float))
    acc = groupby_ci(df, [by, "tolerance"], "accuracy", cluster="image_id", n_resamples=n_resamples, seed=seed)
    extra = df.groupby([by, "tolerance"], sort=True).agg(chance=("chance", "mean"),
                                                         mass_ratio=("mass_ratio", "mean")).reset_index()
    out = acc.merge(extra, on=[by, "tolerance"]).rename(columns={"n_clusters": "n_images"})
    if by == "band":  # numeric band order, not string order
        out = out.assign(_s=out["band"].str.split("-").str[0].astype(int)).sort_values(["tolerance", "_s"])
        out = out.drop(columns="_s")
    return out[cols].reset_index(drop=True)
