"""Heatmaps as arrays in original pixels (drawing lives in ``vlmflow.figures_localize``): one generated token's
attention at a layer, or a stored mention's band averages; and the JSON form of an ``ImageGeometry`` stored beside
the maps so figures redraw without the model."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.heatmap import paint, token_heatmap
from vlmflow.localize.base import LocalizationError

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
    ``layer``, painted over each token's box (``vlmflow.heatmap.token_heatmap``; ``Generation.heatmap`` is the same
    with the generation's own geometry)."""
    return token_heatmap(gen.record, gen.prompt_length, geometry, token, layer, heads, row, block)


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
    return {f"layers {s}-{e - 1}": paint(geometry, values[s:e].mean(0)) for s, e in bands}
