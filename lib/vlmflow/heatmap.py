"""Attention heatmaps in original pixels: recorded attention over the image tokens (``AttentionRecord.image_map``)
painted over each image token's box (``vlmflow.adapters.geometry.ImageGeometry``).

``Generation.heatmap(token, layer)`` (``vlmflow.model``) and the localization figures (``vlmflow.localize.maps``)
both go through :func:`token_heatmap` / :func:`paint`; drawing the arrays over the image is
``vlmflow.figures_localize.plot_heatmaps``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    from vlmflow.adapters.geometry import ImageGeometry
    from vlmflow.record import AttentionRecord

ROWS = ("predicting", "fed")


class HeatmapError(VlmflowError):
    """A heatmap cannot be made as asked (no record, a position or heads the record does not hold...)."""


def head_aggregate(image_map, heads: str | Sequence[int] = "mean") -> np.ndarray:
    """float[R, L, N] from ``AttentionRecord.image_map`` ([R, L, N] head-mean, or [R, L, H, N] per head):
    ``"mean"``, ``"max"`` over heads, or the mean over the listed head indices."""
    m = np.asarray(image_map.float() if hasattr(image_map, "float") else image_map, dtype=float)
    if m.ndim == 3:
        if heads != "mean":
            raise HeatmapError(f"heads={heads!r} needs a per-head record: Record(heads='all')")
        return m
    if heads == "mean":
        return m.mean(2)
    if heads == "max":
        return m.max(2)
    idx = [int(h) for h in heads]
    bad = [h for h in idx if not 0 <= h < m.shape[2]]
    if bad:
        raise HeatmapError(f"head index {bad[0]} out of range: the record has {m.shape[2]} heads")
    return m[:, :, idx].mean(2)


def paint(geometry: "ImageGeometry", values, block: int | str | None = None) -> np.ndarray:
    """float[H, W]: one value per image token painted over its box. ``block``: one grid block (InternVL:
    ``"thumbnail"``, ``0``...); None = every block except a thumbnail together (each tile covers its own part)."""
    if block is not None:
        return geometry.heatmap(values, block=block)
    blocks = [i for i, b in enumerate(geometry.blocks) if b.name != "thumbnail"] or [0]
    out = None
    for b in blocks:
        h = geometry.heatmap(values, block=b)
        out = h if out is None else np.where(np.isnan(out), h, out)
    return out


def token_position(prompt_length: int, token: int, row: str = "predicting") -> int:
    """The attention row of generated token ``token``: ``"predicting"`` = the row that outputs it (position
    ``prompt_length + token - 1``, the last prompt position for token 0: the paper's), ``"fed"`` = where it is fed."""
    if row not in ROWS:
        raise HeatmapError(f"row must be 'predicting' or 'fed', got {row!r}")
    return prompt_length + token - (1 if row == "predicting" else 0)


def token_heatmap(record: "AttentionRecord | None", prompt_length: int, geometry: "ImageGeometry", token: int,
                  layer: int, heads: str | Sequence[int] = "mean", row: str = "predicting",
                  block: int | str | None = None) -> np.ndarray:
    """float[H, W] in original pixels: generated token ``token``'s attention over the image tokens at decoder
    ``layer`` (see :func:`token_position` for ``row``, :func:`paint` for ``block``)."""
    if record is None:
        raise HeatmapError("the generation carries no attention record: generate with record=vf.Record()")
    pos = token_position(prompt_length, token, row)
    hit = (record.row_positions == pos).nonzero().flatten()
    if not len(hit):
        raise HeatmapError(f"position {pos} (generated token {token}, row={row}) was not recorded; recorded "
                           f"positions {record.row_positions.tolist()[:8]}{'...' if len(record.row_positions) > 8 else ''}")
    return paint(geometry, head_aggregate(record.image_map, heads)[int(hit[0]), record.layer(layer)], block)


__all__ = ["HeatmapError", "head_aggregate", "paint", "token_heatmap", "token_position"]
