"""vlmflow.figures: the plotting helpers draw what they are given (checked against numpy oracles and the pixels
matplotlib actually rendered), refuse shapes that do not agree, and label the paper's numbers honestly."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from vlmflow import figures  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_style_applies():
    figures.use_style()
    assert plt.rcParams["axes.spines.top"] is False
    assert to_rgb(plt.rcParams["axes.prop_cycle"].by_key()["color"][0]) == to_rgb("#0072B2")


def test_mean_band_matches_numpy_and_draws_the_band():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(50, 8))
    x = np.arange(8)
    fig, ax = plt.subplots()
    mean, low, high = figures.mean_band(ax, x, values, label="KO")
    np.testing.assert_allclose(mean, values.mean(0))
    np.testing.assert_allclose(high - mean, values.std(0))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), values.mean(0))
    band = ax.collections[0].get_paths()[0].vertices
    assert np.isclose(band[:, 1].max(), high.max()) and np.isclose(band[:, 1].min(), low.min())
    with pytest.raises(figures.FigureError, match="7 columns but x has 8"):
        figures.mean_band(ax, x, values[:, :7])
    with pytest.raises(figures.FigureError, match="unknown band"):
        figures.mean_band(ax, x, values, band="iqr")


def test_role_strip_paints_each_position_in_its_role_colour():
    roles = ["bos"] + ["system"] * 3 + ["image"] * 4 + ["query"] * 2
    fig, ax = plt.subplots(figsize=(5, 1), dpi=100)
    names = figures.role_strip(ax, {"role": roles}, legend=False)
    assert names == ["bos", "system", "image", "query"]
    ax.set_position([0, 0, 1, 1])
    ax.set_axis_off()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[:, :, :3] / 255.0
    row = pixels[pixels.shape[0] // 2]
    for i, role in enumerate(roles):  # the centre pixel of each cell
        x = int((i + 0.5) / len(roles) * pixels.shape[1])
        np.testing.assert_allclose(row[x], to_rgb(figures.ROLE_COLORS[role]), atol=0.02, err_msg=f"position {i}")
    with pytest.raises(figures.FigureError, match="no colour for role or group 'banana'"):
        figures.role_strip(ax, {"role": ["banana"]})
    with pytest.raises(figures.FigureError, match="different lengths"):
        figures.role_strip(ax, {"a": ["bos"], "b": ["bos", "image"]})


def test_heatmap_overlay_checks_sizes():
    image = np.zeros((30, 40, 3))
    fig, ax = plt.subplots()
    layer = figures.heatmap_overlay(ax, image, np.ones((30, 40)), box=(1, 2, 10, 12), point=(5, 5))
    assert layer.get_array().shape == (30, 40)
    with pytest.raises(figures.FigureError, match="heat is 4x3 px but the image is 40x30 px"):
        figures.heatmap_overlay(ax, image, np.ones((3, 4)))


def test_paper_vs_measured_marks_unverified_numbers():
    fig, ax = plt.subplots()
    text = figures.paper_vs_measured(ax, 0.40, 0.37, label="KO img->gen")
    assert text == "KO img->gen: paper, unverified: 0.40; measured: 0.37"
    assert ax.lines[0].get_ydata()[0] == 0.40  # the reference line sits at the paper's value
    text = figures.paper_vs_measured(ax, 73.0, None, x=3, label="30-40", verified=True, fmt="{:.0f}%")
    assert text == "30-40: paper: 73%"


def test_save_writes_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = figures.save(fig, tmp_path / "sub", "line", formats=("png", "pdf"))
    assert path == tmp_path / "sub" / "line.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "sub" / "line.pdf").stat().st_size > 0


def test_peak_centre_marks_the_middle_of_the_peak_token_not_its_corner():
    heat = np.zeros((12, 16))
    heat[4:8, 8:12] = 3.0  # one token's box, 4x4 px
    heat[0:4, 0:4] = 1.0
    assert figures.peak_centre(heat) == (9.5, 5.5)
    heat[8:12, 12:16] = 3.0  # a tie with a later token keeps the first
    assert figures.peak_centre(heat) == (9.5, 5.5)
    edge = np.zeros((6, 6))
    edge[3:, 4:] = 1.0  # a box running to the image's edge
    assert figures.peak_centre(edge) == (4.5, 4.0)
    with pytest.raises(figures.FigureError, match="2-D heatmap"):
        figures.peak_centre(np.full((3, 3), np.nan))


def test_save_refuses_tick_labels_too_small_to_read_at_the_column_width(tmp_path):
    figures.use_style()
    fig, axes = plt.subplots(1, 4, figsize=(16.0, 3.0))  # shrunk to 688 px: 9 pt ticks become ~5 px
    for ax in axes:
        ax.plot([0, 1], [0, 1])
    px, _ = figures.smallest_tick_px(fig)
    natural = fig.get_tightbbox().width * fig.dpi
    assert px == pytest.approx(9 * fig.dpi / 72 * figures.COLUMN_PX / natural, rel=1e-6)
    with pytest.raises(figures.FigureError, match=r"figure 'wide': tick label .* would show [\d.]+ px"):
        figures.save(fig, tmp_path, "wide")
    fig, ax = plt.subplots(figsize=(5.0, 3.0))  # narrower than the column: shown at natural size
    ax.plot([0, 1], [0, 1])
    assert figures.smallest_tick_px(fig)[0] == pytest.approx(9 * fig.dpi / 72)
    assert figures.save(fig, tmp_path, "narrow").is_file()


def test_model_label_keeps_ids_and_shortens_folders(tmp_path):
    from vlmflow.figures import model_label

    assert model_label("toy:internvl") == "toy:internvl"
    assert model_label("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"  # a hub id is not a folder here
    folder = tmp_path / "deep" / "runs" / "model"
    folder.mkdir(parents=True)
    assert model_label(str(folder)) == "runs/model"
    long = model_label("organisation-with-a-long-name/model-with-a-long-name")
    assert len(long) == 28 and long.startswith("…") and long.endswith("model-with-a-long-name")
