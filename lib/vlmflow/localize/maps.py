"""Heatmaps as arrays in original pixels (drawing lives in ``vlmflow.figures_localize``): one generated token's
attention at a layer, or a stored mention's band averages; and the JSON form of an ``ImageGeometry`` stored beside
the maps so figures redraw without the model."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.localize.base import LocalizationError
from vlmflow.localize.score import head_aggregate

if TYPE_CHECKING:
    from vlmflow.adapters.geometry import ImageGeometry
    from vlmflow.model import Generation


def geometry_to_dict(geometry: "ImageGeometry") -> dict:
    """A JSON-able ImageGeometry (stored beside the maps so a rerun draws heatmaps without the model)."""
    return {"image_size": list(geometry.image_size), "boxes": np.asarray(geometry.boxes).tolist(),
            "blocks": [list(b) for b in geometry.blocks],
            "content": list(geometry.content) if geometry.content is not None else None, "method": geometry.method}


def geometry_from_dict(d: dict) -> "ImageGeometry":
    from vlmflow.adapters.geometry import Block, ImageGeometry

    return ImageGeometry(tuple(d["image_size"]), np.asarray(d["boxes"], dtype=float), [Block(*b) for b in d["blocks"]],
                         tuple(d["content"]) if d["content"] is not None else None, d["method"])


def attention_heatmap(gen: "Generation", geometry: "ImageGeometry", token: int, layer: int,
                      heads: str | Sequence[int] = "mean", row: str = "predicting",
                      block: int | str | None = None) -> np.ndarray:
    """float[H, W] in original pixels: generated token ``token``'s attention over the image tokens at decoder
    ``layer``, painted over each token's box. ``block``: a grid block (InternVL: ``"thumbnail"``, ``0``...); None =
    every block except a thumbnail painted together (each tile covers its own part of the image)."""
    rec = gen.record
    if rec is None:
        raise LocalizationError("the generation carries no attention record")
    pos = gen.prompt_length + token - (1 if row == "predicting" else 0)
    hit = (rec.row_positions == pos).nonzero().flatten()
    if not len(hit):
        raise LocalizationError(f"position {pos} (generated token {token}, row={row}) was not recorded")
    values = head_aggregate(rec.image_map, heads)[int(hit[0]), rec.layer(layer)]
    if block is not None:
        return geometry.heatmap(values, block=block)
    blocks = [i for i, b in enumerate(geometry.blocks) if b.name != "thumbnail"] or [0]
    out = None
    for b in blocks:
        h = geometry.heatmap(values, block=b)
        out = h if out is None else np.where(np.isnan(out), h, out)
    return out


def band_maps(image_row: dict, key: str, bands: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """{"layers a-b": float[H, W]} for one stored mention (``key`` = "<object>#<occurrence>" of an image row kept by
    :func:`stored_localization` with maps): the naming token's attention averaged over each band's layers, painted
    over the image tokens' boxes in original pixels (every non-thumbnail block)."""
    if "maps" not in image_row or not isinstance(image_row["maps"], dict):
        raise LocalizationError(f"image {image_row.get('image_id')!r} was stored without maps (n_maps too small)")
    if key not in image_row["maps"]:
        raise LocalizationError(f"image {image_row.get('image_id')!r} has no stored map for {key!r}; "
                                f"stored: {sorted(image_row['maps'])}")
    geometry = geometry_from_dict(image_row["geometry_data"])
    values = np.asarray(image_row["maps"][key], dtype=float)  # [L, N]
    blocks = [i for i, b in enumerate(geometry.blocks) if b.name != "thumbnail"] or [0]
    out = {}
    for s, e in bands:
        v = values[s:e].mean(0)
        heat = None
        for b in blocks:
            h = geometry.heatmap(v, block=b)
            heat = h if heat is None else np.where(np.isnan(heat), h, heat)
        out[f"layers {s}-{e - 1}"] = heat
    return out
