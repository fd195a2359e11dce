"""Toy scenes: determinism, COCO validity (pycocotools), pixel-exact masks, shapes, no overlap, positions."""
import dataclasses
import json

import numpy as np
import pytest

from vlmflow.toy.scenes import (
    BACKGROUND,
    COLORS,
    OVERLAP_TOLERANCE_PX,
    POSITIONS,
    SHAPES,
    SIZES,
    SceneConfig,
    SceneConfigError,
    ToyObject,
    make_scene,
    write_coco,
)


def test_deterministic_for_seed_split_index():
    a, b = make_scene(3, "test", 5), make_scene(3, "test", 5)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.toy_objects == b.toy_objects
    assert [o.bbox for o in a.objects] == [o.bbox for o in b.objects]
    # another split / index / seed gives other scenes (compare many, a coincidence is possible for one)
    differ = sum(
        not np.array_equal(np.asarray(make_scene(3, "test", i).image), np.asarray(make_scene(3, s, i).image))
        for i in range(10) for s in ("train", "val"))
    assert differ == 20
    assert sum(make_scene(3, "test", i).toy_objects != make_scene(4, "test", i).toy_objects for i in range(10)) >= 9


def test_objects_hashable_frozen():
    o = ToyObject("circle", "red", "large")
    assert {o: 1}[ToyObject("circle", "red", "large")] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.shape = "ring"


@pytest.mark.parametrize("config", [SceneConfig(), SceneConfig.for_objects(8, 12), SceneConfig.for_objects(60, 70),
                                    SceneConfig(image_size=96, cells=3)])
def test_masks_pixel_exact_and_disjoint(config):
    for i in range(15):
        sc = make_scene(0, "test", i, config)
        assert config.min_objects <= len(sc.objects) <= config.max_objects
        px = np.asarray(sc.image)
        H, W = px.shape[:2]
        cover = np.zeros((H, W), dtype=int)
        for o in sc.objects:
            cover += o.mask
            # every mask pixel has exactly the object's colour ...
            assert np.all(px[o.mask] == COLORS[o.object.color])
            # ... and inside its cell the colour appears nowhere else (mask = painted pixels, nothing more)
            cell_px = config.image_size // config.cells
            off = (config.image_size - cell_px * config.cells) // 2  # the grid is centred
            r, c = divmod(o.cell, config.cells)
            box = (slice(off + r * cell_px, off + (r + 1) * cell_px), slice(off + c * cell_px, off + (c + 1) * cell_px))
            painted = np.all(px[box] == np.array(COLORS[o.object.color], dtype=np.uint8), axis=-1)
            assert np.array_equal(painted, o.mask[box])
            assert not o.mask[~_cell_region(H, W, box)].any()
            # bbox is tight around the mask
            ys, xs = np.nonzero(o.mask)
            assert list(o.bbox) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert cover.max() <= 1 + OVERLAP_TOLERANCE_PX  # no pixel belongs to two objects
        assert np.all(px[cover == 0] == BACKGROUND)  # plain background elsewhere


def _cell_region(H, W, box):
    m = np.zeros((H, W), dtype=bool)
    m[box] = True
    return m


def _analytic(shape, side):
    """Oracle shape filling a tight side x side box, from geometry (not from the renderer)."""
    y, x = np.mgrid[0:side, 0:side] + 0.5
    c = side / 2
    r = np.hypot(x - c, y - c)
    if shape == "circle":
        return r <= c
    if shape == "ring":
        return (r <= c) & (r >= c - 0.28 * side)
    if shape == "square":  # the tight box of a square is the square
        return np.ones((side, side), dtype=bool)
    if shape == "triangle":
        return (y >= 2 * np.abs(x - c))
    if shape == "cross":
        t = 0.34 * side / 2
        return (np.abs(x - c) <= t) | (np.abs(y - c) <= t)
    raise AssertionError(shape)


def test_masks_match_shapes():
    seen = set()
    for i in range(60):
        sc = make_scene(1, "train", i)
        for o in sc.objects:
            if o.object.size != "large":
                continue
            x, y, w, h = o.bbox
            side = max(w, h)
            sub = o.mask[y:y + side, x:x + side]
            sub = np.pad(sub, ((0, side - sub.shape[0]), (0, side - sub.shape[1])))
            ref = _analytic(o.object.shape, side)
            iou = (sub & ref).sum() / (sub | ref).sum()
            assert iou > 0.8, (o.object, iou)
            # and it is not as close to any other shape
            others = [(s, ((sub & _analytic(s, side)).sum() / (sub | _analytic(s, side)).sum())) for s in SHAPES
                      if s != o.object.shape]
            assert all(v < iou for _, v in others), (o.object, iou, others)
            seen.add(o.object.shape)
    assert seen == set(SHAPES)


def test_positions_match_centres():
    for i in range(30):
        sc = make_scene(2, "val", i)
        for o in sc.objects:
            x, y, w, h = o.bbox
            W, H = sc.image.size
            col, row = min(2, int(3 * (x + w / 2) / W)), min(2, int(3 * (y + h / 2) / H))
            assert o.position == POSITIONS[3 * row + col]
        # reading order = row-major cells
        assert [o.cell for o in sc.objects] == sorted(o.cell for o in sc.objects)


def test_attribute_coverage():
    objs = [o for i in range(150) for o in make_scene(0, "train", i).toy_objects]
    assert {o.shape for o in objs} == set(SHAPES) and len(SHAPES) >= 5
    assert {o.color for o in objs} == set(COLORS) and len(COLORS) == 6
    assert {o.size for o in objs} == set(SIZES) and len(SIZES) == 2


def test_clutter_keeps_masks_and_changes_background():
    plain, noisy = make_scene(0, "test", 1), make_scene(0, "test", 1, SceneConfig(clutter=1.0))
    assert plain.toy_objects == noisy.toy_objects
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(plain.objects, noisy.objects))
    assert not np.array_equal(np.asarray(plain.image), np.asarray(noisy.image))


def test_bad_config_is_named():
    with pytest.raises(SceneConfigError, match="max_objects=17"):
        SceneConfig(max_objects=17)  # 4 x 4 grid by default
    with pytest.raises(SceneConfigError, match="split"):
        make_scene(0, "dev", 0)


def test_coco_loads_in_pycocotools(tmp_path):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    path = write_coco(tmp_path, seed=5, n=6, split="test", progress=False)
    coco = COCO(str(path))
    data = json.loads(path.read_text())
    assert len(coco.getImgIds()) == 6
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == set(SHAPES)
    for img in coco.loadImgs(coco.getImgIds()):
        sc = make_scene(5, "test", int(img["file_name"].split("_")[1].split(".")[0]))
        assert (tmp_path / "images" / img["file_name"]).exists()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        assert len(anns) == len(sc.objects)
        for a, o in zip(anns, sc.objects):
            assert np.array_equal(coco.annToMask(a).astype(bool), o.mask)
            assert a["area"] == int(mask_utils.area(a["segmentation"])) == o.mask.sum()
            assert coco.loadCats(a["category_id"])[0]["name"] == o.object.shape
            assert (a["color"], a["size"], a["position"]) == (o.object.color, o.object.size, o.position)
        caps = [c["caption"] for c in data["captions"] if c["image_id"] == img["id"]]
        assert caps == [sc.description]
    assert {q["kind"] for q in data["questions"]} >= {"describe", "exists", "count"}
    # written images are the rendered pixels
    from PIL import Image

    first = coco.loadImgs(coco.getImgIds())[0]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "images" / first["file_name"])),
                          np.asarray(make_scene(5, "test", 0).image))


def test_cli_scenes_writes_coco(tmp_path):
    from vlmflow.cli import main

    assert main(["toy", "scenes", "--seed", "2", "--n", "3", "--out", str(tmp_path), "--max-objects", "9",
                 "--min-objects", "8", "--clutter", "0.5"]) == 0
    data = json.loads((tmp_path / "instances.json").read_text())
    assert len(data["images"]) == 3 and len(list((tmp_path / "images").iterdir())) == 3
    per_image = {img["id"]: sum(a["image_id"] == img["id"] for a in data["annotations"]) for img in data["images"]}
    assert all(8 <= k <= 9 for k in per_image.values())
    assert data["info"]["config"]["clutter"] == 0.5 and data["info"]["overlap_tolerance_px"] == 0
