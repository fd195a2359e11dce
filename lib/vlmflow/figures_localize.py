"""Localization figures (Figure 6): several attention heatmaps over one image, drawn with the project style's
``vlmflow.figures.heatmap_overlay``; the arrays come from ``vlmflow.localize.maps``."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def plot_heatmaps(image, maps: dict[str, np.ndarray], *, peaks: dict[str, tuple[float, float]] | None = None,
                  box: Sequence[float] | None = None, ncols: int = 4, size: float = 2.6):
    """Draw several heatmaps (title -> float[H, W], e.g. one per layer from :func:`attention_heatmap`) over the
    image; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    from vlmflow.figures import heatmap_overlay

    n = len(maps)
    ncols = min(ncols, n) or 1
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax, (title, heat) in zip(axes.flat, maps.items()):
        heatmap_overlay(ax, image, heat, title=title, box=box, point=(peaks or {}).get(title))
    for ax in list(axes.flat)[n:]:
        ax.set_axis_off()
    return fig
