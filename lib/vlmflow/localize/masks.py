"""Masks -> per-token hit rules: which image tokens a peak may fall on to count as a hit (pixel or token tolerance),
and the attention mass inside an object. Built from ``vlmflow.adapters.geometry.ImageGeometry`` boxes."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.localize.base import LocalizationError

if TYPE_CHECKING:
    from vlmflow.adapters.geometry import ImageGeometry


@dataclass
class MaskTokens:
    """One ground-truth mask seen through one image geometry.

    coverage:    float[N] share of each token's box (integer pixel edges) inside the mask
    dist_px:     float[N] Euclidean distance (px) from the pixel holding each token's box centre to the nearest mask
                 pixel (0 inside; inf for tokens that cover only preprocessing padding)
    dist_tokens: float[N] Chebyshev distance (in tokens, within the token's own grid block) to the nearest token
                 whose box overlaps the mask (inf when no token of that block overlaps it)
    """

    coverage: np.ndarray
    dist_px: np.ndarray
    dist_tokens: np.ndarray
    valid: np.ndarray
    _edt: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, mask: np.ndarray, geometry: "ImageGeometry") -> "MaskTokens":
        from scipy import ndimage

        mask = np.asarray(mask, dtype=bool)
        W, H = geometry.image_size
        if mask.shape != (H, W):
            raise LocalizationError(f"mask is {mask.shape[1]}x{mask.shape[0]} px but the geometry's image is {W}x{H}")
        N = geometry.n_tokens
        valid = geometry.valid
        # distance of every pixel to the mask; an empty mask is infinitely far
        edt = ndimage.distance_transform_edt(~mask) if mask.any() else np.full(mask.shape, np.inf)
        centres = geometry.box_centers()
        px = np.clip(np.floor(centres[:, 0]).astype(int), 0, W - 1)
        py = np.clip(np.floor(centres[:, 1]).astype(int), 0, H - 1)
        dist_px = np.where(valid, edt[py, px], np.inf)
        # coverage from an integral image over each block's integer pixel edges
        integral = np.zeros((H + 1, W + 1))
        integral[1:, 1:] = mask.cumsum(0).cumsum(1)
        coverage = np.zeros(N)
        dist_tokens = np.full(N, np.inf)
        for b, blk in enumerate(geometry.blocks):
            _, edges = geometry.pixel_edges(b)
            x0, x1 = edges[:, 0].clip(0, W), edges[:, 2].clip(0, W)
            y0, y1 = edges[:, 1].clip(0, H), edges[:, 3].clip(0, H)
            inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
            area = (x1 - x0) * (y1 - y0)
            cov = np.where(area > 0, inside / np.maximum(area, 1), 0.0)
            coverage[blk.tokens.start: blk.tokens.stop] = cov
            grid = (cov > 0).reshape(blk.rows, blk.cols)
            if grid.any():
                d = ndimage.distance_transform_cdt(~grid, metric="chessboard").astype(float)
                dist_tokens[blk.tokens.start: blk.tokens.stop] = d.reshape(-1)
        dist_tokens[~valid] = np.inf
        return cls(coverage, dist_px, dist_tokens, valid, edt)

    def hits(self, tolerance: float, unit: str = "px") -> np.ndarray:
        """bool[N]: would a peak on each token score a hit at this tolerance."""
        if unit == "px":
            return self.dist_px <= tolerance
        if unit == "tokens":
            return self.dist_tokens <= tolerance
        raise LocalizationError(f"unknown tolerance unit {unit!r}; use 'px' or 'tokens'")

    def distance(self, unit: str = "px") -> np.ndarray:
        return self.dist_px if unit == "px" else self.dist_tokens

    def area_share(self, tolerance: float) -> float:
        """Share of the image's pixels within ``tolerance`` px of the mask (the dilated mask's area share)."""
        return float((self._edt <= tolerance).mean())

    @staticmethod
    def union(parts: Sequence["MaskTokens"]) -> "MaskTokens":
        """The union of several instances' masks (distances: the minimum; coverage: capped sum, exact for the
        non-overlapping toy masks and an upper bound where COCO instances overlap)."""
        if len(parts) == 1:
            return parts[0]
        return MaskTokens(np.minimum(1.0, sum(p.coverage for p in parts)), np.min([p.dist_px for p in parts], 0),
                          np.min([p.dist_tokens for p in parts], 0), parts[0].valid,
                          np.min([p._edt for p in parts], 0))


def mass_inside(attention: np.ndarray, target: MaskTokens) -> tuple[float, float]:
    """(mass_in, mask_share) for an attention vector float[N] over the image tokens: the attention share on the
    object (each token weighted by its coverage) and what uniform attention over the N tokens would give."""
    a = np.asarray(attention, dtype=float)
    total = a.sum()
    mass_in = float((a * target.coverage).sum() / total) if total > 0 else float("nan")
    return mass_in, float(target.coverage.mean())
