"""Plotting helpers and the project's one style, shared by every figure notebook in ``notebooks/``.

The library computes (``vlmflow.model``, ``vlmflow.sweep``, ``vlmflow.judge``...), the notebooks call these helpers to
draw, and ``vlmflow.book`` executes the notebooks and builds the book. Keeping colours, bands and the "paper reported
vs measured" annotation here means every figure of the book reads the same way:

- :func:`use_style` applies ``vlmflow.mplstyle`` (call it once at the top of a notebook);
- :data:`ROLE_COLORS` / :data:`GROUP_COLORS`: one colour per token role / paper group (``vlmflow.roles``);
- :func:`mean_band`: a line with a mean +- std or bootstrap-CI band (Figures 1, 2, the middle-layer sweeps);
- :func:`heatmap_overlay`: a token heatmap painted over the original image (Figure 6);
- :func:`peak_centre`: where to mark a token heatmap's peak: the centre of the peak token's box, not its corner;
- :func:`paper_vs_measured`: the paper's number (marked unverified where it is) beside the one measured here;
- :func:`role_strip`: the token-role layout of a prompt as coloured strips (the "Token groups" page);
- :func:`glue_markdown`: a computed Markdown statement shown on the figure's page and glued (as HTML) for a chapter
  page that pastes it with ``{glue:any}``;
- :func:`save`: writes a figure as PNG into a results folder and returns the path, after :func:`smallest_tick_px`
  checked that its tick labels stay legible at the book's column width.

matplotlib is imported lazily so that ``import vlmflow.figures`` (and ``vlmflow --help``) stays cheap.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

STYLE_PATH = Path(__file__).with_name("vlmflow.mplstyle")
# The book's text column (sphinx-book-theme, a 1280 px wide window): a figure wider than this is shrunk to fit, and its
# tick labels shrink with it. MIN_TICK_PX is the smallest tick label a reader can still read there.
COLUMN_PX = 688
MIN_TICK_PX = 9.0

# One colour per role of vlmflow.roles.ROLES (Okabe-Ito based). Roles inside the paper's `text` group share warm
# hues so the paper's grouping stays visible in the fine-grained view.
ROLE_COLORS: dict[str, str] = {
    "pad": "#DDDDDD",
    "bos": "#000000",
    "system": "#E69F00",
    "user": "#F0E442",
    "image": "#0072B2",
    "query": "#D55E00",
    "assistant": "#CC79A7",
    "generated": "#009E73",
}
# The paper's three groups: text (every non-image prompt position, T_txt), image, generated.
GROUP_COLORS: dict[str, str] = {"text": "#5D6D7E", "image": "#0072B2", "generated": "#009E73", "pad": "#DDDDDD"}
# The image-token rankings of vlmflow.selection (top-K curves: the middle layers, the planted models).
SELECTION_COLORS: dict[str, str] = {"attention": "#D55E00", "band": "#CC79A7", "norm": "#0072B2", "random": "#555555"}

PAPER_LABEL = "paper"
UNVERIFIED = "unverified"


class FigureError(VlmflowError):
    """Bad input to a plotting helper (shapes that do not agree, unknown role...)."""


def use_style() -> None:
    """Apply the project style (``vlmflow.mplstyle``) to every later matplotlib figure in this process."""
    import matplotlib.pyplot as plt

    plt.style.use(str(STYLE_PATH))


def start(results_dir: str | Path, *, device: str = "cpu", cpu_threads: int | None = None) -> Path:
    """What every figure notebook does first: the project style, ``cpu_threads`` torch threads on the CPU (the toy
    model gains nothing from more, and on a shared CPU extra threads only contend), and its results folder (created)
    -> that folder."""
    use_style()
    if device == "cpu" and cpu_threads:
        import torch

        torch.set_num_threads(int(cpu_threads))
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    return results


def glue_markdown(key: str, text: str):
    """Glue ``text`` (Markdown computed by the notebook) under ``key`` for another page of the book, as HTML: a
    ``{glue:any}`` paste renders no Markdown. Outside the book's environment (no myst_nb) nothing is glued.
    -> the Markdown object, for the notebook to display."""
    from IPython.display import HTML, Markdown

    try:
        from myst_nb import glue
    except ImportError:
        return Markdown(text)
    from markdown_it import MarkdownIt  # the book's own Markdown parser (myst-parser's)

    glue(key, HTML(MarkdownIt().render(text)), display=False)
    return Markdown(text)


def model_label(model: str, width: int = 28) -> str:
    """A model as a figure title names it: a hub id or toy name as given, a local folder by its last two path parts
    (a full path would widen the figure until its ticks are unreadable); at most ``width`` characters."""
    if "/" in model and Path(model).expanduser().is_dir():
        model = "/".join(Path(model).expanduser().resolve().parts[-2:])
    return model if len(model) <= width else "…" + model[-(width - 1):]


def mean_band(
    ax: "Axes",
    x: Sequence[float] | np.ndarray,
    values: np.ndarray | None = None,
    *,
    mean: np.ndarray | None = None,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    band: str = "std",
    label: str | None = None,
    color: str | None = None,
    alpha: float = 0.2,
    **line_kw: Any,
):
    """Plot a mean line with a shaded band.

    Either ``values`` float[n_samples, len(x)] (the band is computed: ``band="std"`` -> mean +- std, ``band="minmax"``
    -> range) or precomputed ``mean``/``low``/``high`` float[len(x)] (e.g. bootstrap CIs from ``vlmflow.stats``).
    Returns ``(mean, low, high)`` as plotted, so a notebook can print the same numbers it draws.
    """
    x = np.asarray(x, dtype=float)
    if values is not None:
        v = np.asarray(values, dtype=float)
        if v.ndim == 1:
            v = v[None, :]
        if v.shape[-1] != x.shape[0]:
            raise FigureError(f"mean_band: values have {v.shape[-1]} columns but x has {x.shape[0]} points")
        mean = np.nanmean(v, axis=0)
        if band == "std":
            sd = np.nanstd(v, axis=0)
            low, high = mean - sd, mean + sd
        elif band == "minmax":
            low, high = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
        else:
            raise FigureError(f"mean_band: unknown band {band!r}; use 'std' or 'minmax', or pass low/high")
    elif mean is None:
        raise FigureError("mean_band: pass either values[n, len(x)] or mean (with optional low/high)")
    mean = np.asarray(mean, dtype=float)
    if mean.shape != x.shape:
        raise FigureError(f"mean_band: mean has shape {mean.shape}, x has {x.shape}")
    (line,) = ax.plot(x, mean, label=label, color=color, **line_kw)
    if low is not None and high is not None:
        low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
        if low.shape != x.shape or high.shape != x.shape:
            raise FigureError(f"mean_band: low/high shapes {low.shape}/{high.shape} differ from x {x.shape}")
        ax.fill_between(x, low, high, color=line.get_color(), alpha=alpha, linewidth=0)
    return mean, low, high


def heatmap_overlay(
    ax: "Axes",
    image,
    heat: np.ndarray,
    *,
    alpha: float = 0.55,
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
    box: Sequence[float] | None = None,
    point: Sequence[float] | None = None,
    title: str | None = None,
):
    """Draw ``heat`` float[H, W] (in original-image pixels, e.g. ``ImageGeometry.heatmap(values)``) over ``image``
    (PIL image or array[H, W(, C)]). ``box`` (x0, y0, x1, y1) outlines an object, ``point`` (x, y) marks a peak.
    Returns the heat layer's AxesImage (for a colorbar)."""
    img = np.asarray(image)
    heat = np.asarray(heat, dtype=float)
    if heat.shape[:2] != img.shape[:2]:
        raise FigureError(
            f"heatmap_overlay: heat is {heat.shape[1]}x{heat.shape[0]} px but the image is "
            f"{img.shape[1]}x{img.shape[0]} px; map token values to pixels first (ImageGeometry.heatmap)"
        )
    ax.imshow(img, interpolation="bilinear")
    layer = ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax, interpolation="nearest")
    if box is not None:
        from matplotlib.patches import Rectangle

        x0, y0, x1, y1 = box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#56B4E9", linewidth=1.6))
    if point is not None:
        ax.plot([point[0]], [point[1]], marker="x", color="white", markersize=8, markeredgewidth=2)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return layer


def peak_centre(heat: np.ndarray) -> tuple[float, float]:
    """(x, y) in pixels: the centre of the block of pixels that holds ``heat``'s maximum. A token heatmap paints one
    value over each token's box, so the first maximal pixel (``argmax``) is the peak token's top-left corner; a
    marker there sits on the token's edge and a hit looks like a miss. The block is the run of maximal pixels from
    that corner along its row and its column (ties between two tokens keep the first)."""
    heat = np.asarray(heat, dtype=float)
    if heat.ndim != 2 or not np.isfinite(heat).any():
        raise FigureError(f"peak_centre: need a 2-D heatmap with a finite value, got shape {heat.shape}")
    top = np.nanmax(heat)
    y0, x0 = np.unravel_index(np.nanargmax(heat), heat.shape)
    row, col = heat[y0, x0:] == top, heat[y0:, x0] == top
    width = int(np.argmin(row)) if not row.all() else row.size
    height = int(np.argmin(col)) if not col.all() else col.size
    return float(x0 + (width - 1) / 2), float(y0 + (height - 1) / 2)


def paper_vs_measured(
    ax: "Axes",
    paper: float | None,
    measured: float | None,
    *,
    x: float | None = None,
    label: str = "",
    verified: bool = False,
    fmt: str = "{:.2f}",
    color: str = "#555555",
    annotate: bool = True,
):
    """Show the paper's reported value beside the value measured here.

    With ``x=None`` the paper's value is a dashed horizontal reference line across the axes; with ``x`` given both
    are markers at that x (e.g. one layer band). Paper numbers that this project could not check against the paper's
    own code say so in their label (unverified). Returns the annotation text, which notebooks also print so that the
    page states it in words; with ``annotate=False`` the text is only returned, not drawn (a narrow axes has no room
    for it beside its data).
    """
    tag = PAPER_LABEL if verified else f"{PAPER_LABEL}, {UNVERIFIED}"
    parts = []
    if paper is not None:
        parts.append(f"{tag}: {fmt.format(paper)}")
        if x is None:
            ax.axhline(paper, color=color, linestyle="--", linewidth=1.1, label=f"{label} ({tag})".strip())
        else:
            ax.plot([x], [paper], marker="D", linestyle="none", color=color, markerfacecolor="white",
                    label=f"{label} ({tag})".strip())
    if measured is not None:
        parts.append(f"measured: {fmt.format(measured)}")
        if x is not None:
            ax.plot([x], [measured], marker="o", linestyle="none", color="#D55E00", label=f"{label} (measured)".strip())
    text = (f"{label}: " if label else "") + "; ".join(parts)
    if parts and annotate:
        ax.annotate(text, xy=(0.99, 0.02), xycoords="axes fraction", ha="right", va="bottom", fontsize=8,
                    color=color)
    return text


def role_strip(
    ax: "Axes",
    rows: Mapping[str, Sequence[str]],
    *,
    colors: Mapping[str, str] | None = None,
    tick_every: int | None = None,
    legend: bool = True,
):
    """Draw one horizontal strip per entry of ``rows`` (label -> a role or group name per position), each position a
    coloured cell: the layout of a prompt by token role (``TokenRoles.names(row)``) and, e.g., by the paper's groups.
    Returns the list of names in the legend order."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    palette = dict(ROLE_COLORS)
    palette.update(GROUP_COLORS)
    if colors:
        palette.update(colors)
    labels = list(rows)
    lengths = {len(v) for v in rows.values()}
    if len(lengths) != 1:
        raise FigureError(f"role_strip: rows have different lengths {sorted(lengths)}; one prompt per figure")
    (length,) = lengths
    names: list[str] = []
    for seq in rows.values():
        for n in seq:
            if n not in palette:
                raise FigureError(f"role_strip: no colour for role or group {n!r}; known: {', '.join(palette)}")
            if n not in names:
                names.append(n)
    index = {n: i for i, n in enumerate(names)}
    grid = np.array([[index[n] for n in rows[label]] for label in labels])  # int[n_rows, T]
    ax.imshow(grid, cmap=ListedColormap([palette[n] for n in names]), vmin=-0.5, vmax=len(names) - 0.5,
              aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("position")
    if tick_every:
        ax.set_xticks(range(0, length, tick_every))
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if legend:
        ax.legend(handles=[Patch(color=palette[n], label=n) for n in names], ncol=min(len(names), 8),
                  loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(labels) < 3 else -0.25), frameon=False)
    return names


def smallest_tick_px(fig: "Figure", column_px: float = COLUMN_PX) -> tuple[float, str]:
    """(size in px, text) of the smallest visible tick label of ``fig`` as the book displays it: the notebook's
    inline image is ``fig.dpi`` pixels per inch of the tight bounding box, shrunk to ``column_px`` when wider."""
    fig.canvas.draw()
    natural = fig.get_tightbbox().width * fig.dpi
    scale = min(1.0, column_px / natural) if natural > 0 else 1.0
    smallest = (float("inf"), "")
    for ax in fig.axes:
        for label in ax.get_xticklabels() + ax.get_yticklabels():
            if label.get_visible() and label.get_text().strip():
                px = label.get_fontsize() * fig.dpi / 72 * scale
                smallest = min(smallest, (px, label.get_text()))
    return smallest


def save(fig: "Figure", results_dir: str | Path, name: str, *, formats: Sequence[str] = ("png",)) -> Path:
    """Write ``fig`` as ``results_dir/<name>.<fmt>`` for each format; returns the first path. The folder is created.
    A figure whose tick labels would show smaller than MIN_TICK_PX at the book's column width is refused
    (FigureError naming it): draw fewer panels per row, or a narrower figure."""
    px, text = smallest_tick_px(fig)
    if px < MIN_TICK_PX:
        raise FigureError(f"figure {name!r}: tick label {text!r} would show {px:.1f} px tall in the book's "
                          f"{COLUMN_PX} px column (minimum {MIN_TICK_PX:g}); use fewer panels per row or a narrower "
                          f"figure (now {fig.get_figwidth():.1f} in)")
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{fmt}" for fmt in formats]
    for p in paths:
        fig.savefig(p)
    return paths[0]


def ci_lines(ax: "Axes", table, x: str, value: str, by: str | None = None, colors: dict | None = None,
             labels: dict | None = None, **line_kw: Any) -> None:
    """One :func:`mean_band` per group of a ``vlmflow.stats.groupby_ci`` table (columns ``x``, ``value``,
    ``<value>_low``, ``<value>_high`` and ``by``): the open-question chapters' curves of a score over layers,
    levels or output positions, one line per knockout type or query kind."""
    color, label = line_kw.pop("color", None), line_kw.pop("label", None)  # one line (by=None): its own
    groups = [(None, table)] if by is None else list(table.groupby(by, sort=False))
    for name, g in groups:
        g = g.sort_values(x)
        mean_band(ax, g[x].to_numpy(dtype=float), mean=g[value].to_numpy(dtype=float),
                  low=g[f"{value}_low"].to_numpy(dtype=float), high=g[f"{value}_high"].to_numpy(dtype=float),
                  label=label if name is None else (labels or {}).get(name, str(name)),
                  color=color if name is None else (colors or {}).get(name), **line_kw)
