"""Localization (vlmflow.localize) against independent oracles.

- Real COCO images and pycocotools masks, for each adapter's preprocessing (LLaVA pad-to-square, InternVL tiles +
  thumbnail, Qwen2-VL smart resize, with the released models' processor settings): a synthetic attention map peaked
  on the token over a mask's deepest interior pixel scores a hit; one peaked on a token whose centre is (by a k-d
  tree over the mask's pixels) just beyond the tolerance scores a miss, and one just inside it a hit.
- Toy scenes (exact masks, token tolerance): a hit at k = 0 iff the peak token's box holds a mask pixel (read off the
  mask directly); k = 1 adds exactly the 8-neighbours.
- Uniform attention has mass ratio 1; the chance rate equals the share of tokens that would hit; "any" and "nearest"
  instances agree on hits and "nearest" never has a larger chance.
- Naming tokens: toy grammar and the lexical judge's COCO vocabulary, mapped to the right generated token.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmflow import localize as Lz
from vlmflow.adapters import geometry as G
from vlmflow.record import AttentionRecord
from vlmflow.roles import ROLES


@pytest.fixture(scope="module")
def coco():
    from vlmflow.data import coco_sample
    from vlmflow.errors import DataNotAvailableError

    try:
        return coco_sample(progress=False)
    except DataNotAvailableError as exc:
        pytest.skip(f"COCO sample not available: {exc}")


class FakeGeneration:
    """What localize_generation reads from a Generation: prompt_length and an AttentionRecord."""

    def __init__(self, image_map: np.ndarray, prompt_length: int = 10, layers=None):
        R, L = image_map.shape[:2]
        self.prompt_length = prompt_length
        self.token_ids = list(range(R))
        self.record = AttentionRecord(
            layers=tuple(layers or range(L)), row_positions=torch.arange(prompt_length - 1, prompt_length - 1 + R),
            row_token_ids=torch.full((R,), -1), role_mass=torch.zeros(R, L, len(ROLES)),
            key_share=torch.zeros(R, len(ROLES)), image_map=torch.as_tensor(image_map, dtype=torch.float32),
            image_positions=torch.arange(image_map.shape[-1]))


def _one_hot(n: int, token: int) -> np.ndarray:
    a = np.full(n, 1e-4)
    a[token] = 1.0
    return a


def _score(geo, mask_parts, token, tolerance, unit="px", instances="any"):
    """Score a one-hot attention map peaked on ``token``; mask_parts: bool masks, or prebuilt MaskTokens."""
    gen = FakeGeneration(_one_hot(geo.n_tokens, token)[None, None])
    m = Lz.Mention("obj", "obj", "obj", 0, token=0)
    parts = [p if isinstance(p, Lz.MaskTokens) else Lz.MaskTokens.build(p, geo) for p in mask_parts]
    truth = Lz.ObjectTruth(list(range(len(parts))), parts)
    rows = Lz.localize_generation(gen, geo, [m], {m: truth}, tolerances=[tolerance], unit=unit, instances=instances)
    assert len(rows) == 1
    return rows[0]


def _oracle_distances(geo, mask):
    """float[N]: distance from the pixel holding each token's centre to the nearest mask pixel, by a k-d tree over
    the mask's pixel coordinates (an algorithm independent of the distance transform localize uses); inf for
    padding-only tokens."""
    from scipy.spatial import cKDTree

    ys, xs = np.nonzero(mask)
    centres = np.floor(geo.box_centers())
    d, _ = cKDTree(np.stack([xs, ys], 1)).query(centres)
    return np.where(geo.valid, d, np.inf)


def _geometries(size):
    from tests.unit.test_geometry import internvl_processor, llava_pad_processor, qwen_processor

    proc, config = internvl_processor()
    return {"llava-pad": G.llava_geometry(size, llava_pad_processor(), patch_size=14),
            "internvl-tiles": G.internvl_geometry(size, proc, config),
            "qwen2-vl-resize": G.qwen2_vl_geometry(size, None, qwen_processor())}


@pytest.mark.parametrize("image_index", [0, 33])
def test_synthetic_peaks_on_real_coco_masks_for_every_preprocessing(coco, image_index):
    from scipy import ndimage

    image_id = [i for i in coco.image_ids if coco.annotations(i)][image_index]
    info = coco.image_info(image_id)
    size = (info["width"], info["height"])
    ann = max(coco.annotations(image_id), key=lambda a: a["area"])  # the largest instance has a clear interior
    mask = coco.mask(ann).astype(bool)
    deep = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask)), mask.shape)  # (y, x)
    tol = Lz.DEFAULT_TOLERANCE_PX
    for name, geo in _geometries(size).items():
        target = Lz.MaskTokens.build(mask, geo)
        n_checked = 0
        for b in range(len(geo.blocks)):  # InternVL: each tile holding the point, and the thumbnail
            try:
                token = geo.token_at(deep[1] + 0.5, deep[0] + 0.5, block=b)
            except G.GeometryError:
                continue
            row = _score(geo, [target], token, tol)
            assert row["hit"], (name, b, row)
            n_checked += 1
        assert n_checked >= 1
        brute = _oracle_distances(geo, mask)
        beyond = np.flatnonzero((brute > tol) & np.isfinite(brute))
        assert len(beyond), name  # the largest instance still leaves tokens far from it
        near_miss = beyond[np.argmin(brute[beyond])]  # the closest token that is still too far
        assert not _score(geo, [target], near_miss, tol)["hit"], (name, brute[near_miss])
        within = np.flatnonzero((brute > 0) & (brute <= tol))
        assert len(within), name
        edge_hit = within[np.argmax(brute[within])]  # outside the mask, but within the tolerance
        assert _score(geo, [target], edge_hit, tol)["hit"], (name, brute[edge_hit])
        # the chance rate is the share of tokens a peak would hit on, by the same oracle
        assert _score(geo, [target], 0, tol)["chance"] == pytest.approx((brute <= tol).mean())


def test_padding_tokens_never_hit(coco):
    image_id = next(i for i in coco.image_ids if coco.image_info(i)["width"] != coco.image_info(i)["height"]
                    and coco.annotations(i))
    info = coco.image_info(image_id)
    geo = _geometries((info["width"], info["height"]))["llava-pad"]
    pad = int(np.flatnonzero(~geo.valid)[0])
    full = np.ones((info["height"], info["width"]), dtype=bool)  # even a mask covering the whole image
    row = _score(geo, [full], pad, 1e6)
    assert not row["hit"] and np.isnan(row["peak_x"])


def _toy_size() -> int:
    from vlmflow.toy.scenes import SceneConfig

    return SceneConfig().image_size


def _toy_geometry():
    """An 8 x 8 token grid over the default toy scene size (the geometry does not depend on the model)."""
    from transformers import CLIPImageProcessorPil

    S = _toy_size()
    ip = CLIPImageProcessorPil(size={"shortest_edge": S}, crop_size={"height": S, "width": S})
    return G.llava_geometry((S, S), ip, patch_size=S // 8)


def test_token_tolerance_on_exact_toy_masks():
    from vlmflow.toy.scenes import make_scene

    geo = _toy_geometry()
    edges = geo.pixel_edges(0)[1]
    for i in range(5):
        scene = make_scene(0, "test", i)
        mask = scene.objects[0].mask
        overlaps = np.array([mask[y0:y1, x0:x1].any() for x0, y0, x1, y1 in edges])  # oracle: read the mask
        grid = overlaps.reshape(8, 8)
        for t in range(0, 64, 3):
            r, c = divmod(t, 8)
            near = grid[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].any()
            assert _score(geo, [mask], t, 0, unit="tokens")["hit"] == overlaps[t]
            assert _score(geo, [mask], t, 1, unit="tokens")["hit"] == near
        assert _score(geo, [mask], 0, 0, unit="tokens")["chance"] == pytest.approx(overlaps.mean())


def test_uniform_attention_has_mass_ratio_one_and_peaked_attention_more():
    from vlmflow.toy.scenes import make_scene

    geo = _toy_geometry()
    mask = make_scene(0, "test", 1).objects[0].mask
    target = Lz.MaskTokens.build(mask, geo)
    mass_in, share = Lz.mass_inside(np.full(64, 1 / 64), target)
    assert mass_in == pytest.approx(share) and 0 < share < 1
    best = int(np.argmax(target.coverage))
    mass_in, _ = Lz.mass_inside(np.eye(64)[best], target)
    assert mass_in == pytest.approx(target.coverage[best], rel=1e-6) and mass_in / share > 1


def test_any_and_nearest_instances():
    from vlmflow.toy.scenes import make_scene

    geo = _toy_geometry()
    scene = next(s for s in (make_scene(0, "test", i) for i in range(40)) if len(s.objects) >= 2)
    a, b = scene.objects[0].mask, scene.objects[1].mask
    target_a = Lz.MaskTokens.build(a, geo)
    on_a = int(np.argmax(target_a.coverage))
    any_row = _score(geo, [a, b], on_a, 0, unit="tokens", instances="any")
    nearest_row = _score(geo, [a, b], on_a, 0, unit="tokens", instances="nearest")
    assert any_row["hit"] and nearest_row["hit"] and nearest_row["nearest_annotation"] == 0
    assert nearest_row["chance"] == pytest.approx((target_a.dist_tokens <= 0).mean())
    assert nearest_row["chance"] < any_row["chance"]
    assert any_row["mask_share"] > nearest_row["mask_share"]


def test_toy_mentions_point_at_the_shape_token():
    from vlmflow.toy.model import build_tokenizer

    tok = build_tokenizer()
    text = "large red circle , two small blue rings , square"
    ids = tok(text, add_special_tokens=False)["input_ids"]

    class Gen:
        token_ids = ids

    found = Lz.mentions(Gen(), tok, "toy")
    words = text.split()
    assert [(m.name, words[m.token]) for m in found] == [
        ("large red circle", "circle"), ("small blue ring", "rings"), ("small blue ring", "rings"),
        ("square", "square")]
    assert [m.occurrence for m in found] == [0, 0, 1, 0]


def test_coco_mentions_use_the_lexical_vocabulary_and_token_offsets():
    from tests.tiny.llava import build_tokenizer

    tok = build_tokenizer()
    text = "a man sitting on a car with a dog and a woman"
    ids = tok(text, add_special_tokens=False)["input_ids"]

    class Gen:
        token_ids = ids

    found = Lz.mentions(Gen(), tok, "coco")
    words = text.split()
    assert [(m.category, words[m.token]) for m in found] == [
        ("person", "man"), ("car", "car"), ("dog", "dog"), ("person", "woman")]
    assert found[-1].occurrence == 1
    assert [m.category for m in Lz.coco_mentions("two hot dogs and a teddy bear's nose")] == ["hot dog", "teddy bear"]


def test_heatmap_and_accuracy_table():
    import pandas as pd

    geo = _toy_geometry()
    maps = np.random.default_rng(0).random((3, 2, 64))
    gen = FakeGeneration(maps)
    heat = Lz.attention_heatmap(gen, geo, token=1, layer=1)
    S = _toy_size()
    assert heat.shape == (S, S) and not np.isnan(heat).any()
    peak = int(np.argmax(maps[1, 1]))
    x0, y0, x1, y1 = geo.boxes[peak].astype(int)
    assert heat[y0, x0] == pytest.approx(maps[1, 1].max())
    rows = []
    for img in range(6):
        for layer in range(4):
            rows.append({"image_id": img, "layer": layer, "band": Lz.band_label(layer, Lz.layer_bands(4, 2)),
                         "tolerance": 0.0, "present": True, "hit": float(layer >= 2 or img == 0), "chance": 0.1,
                         "mass_ratio": 2.0, "lost": img % 2 == 0})
    table = Lz.accuracy_table(pd.DataFrame(rows), by="band", n_resamples=200)
    assert list(table["band"]) == ["0-1", "2-3"]
    assert table["accuracy"].tolist() == pytest.approx([1 / 6, 1.0])
    assert (table["accuracy_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["accuracy_high"]).all()
    lost = Lz.accuracy_table(pd.DataFrame(rows), by="layer", subset="lost", n_resamples=50)
    assert lost["n_images"].max() == 3
    fig = Lz.plot_heatmaps(np.zeros((S, S, 3), dtype=np.uint8), {"layer 1": heat})
    assert len(fig.axes) == 1


def test_toy_sample_folder_is_keyed_by_the_scene_generator_settings(tmp_path):
    """A toy-test folder written under other scene settings (an older default) is never read back as today's."""
    from vlmflow.localize import load_sample
    from vlmflow.toy.scenes import make_scene

    stale = tmp_path / "toy-test-seed0-n2"  # the name folders had before the key included the scene settings
    stale.mkdir()
    (stale / "instances.json").write_text("{}")
    sample = load_sample("toy-test", 2, 0, tmp_path)
    first = sample.image_ids[0]
    assert len(sample.annotations(first)) == len(make_scene(0, "test", 0).objects)
    written = [p.name for p in tmp_path.iterdir() if p.name != stale.name]
    assert len(written) == 1 and written[0].startswith("toy-test-seed0-n2-")
