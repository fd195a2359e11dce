"""Synthetic toy scenes with exact ground truth, written as COCO (readable by pycocotools).

A scene is a flat light-grey canvas with 1-4 objects by default (configurable up to ``cells**2``), each a
``ToyObject(shape, color, size)`` drawn with flat colour and no anti-aliasing, so every object's mask is exactly
the set of pixels painted with its colour. Objects are placed in distinct cells of a ``cells x cells`` grid
with random jitter inside the cell; each object's bounding box stays inside its own cell with a one-pixel
margin, so masks never overlap (overlap tolerance: 0 pixels) and neighbours are at least 2 pixels apart.
Reading order (the canonical description order, see ``grammar.describe``) is the cell order: rows top to
bottom, left to right within a row. Every object also gets a ``position`` word (``top left`` ... ``bottom
right``) from the 3x3 region that holds its centre, used by the position questions (``questions.py``).

Determinism: scene ``i`` of split ``s`` with seed ``k`` is drawn from ``numpy.random.SeedSequence([k,
SPLIT_CODES[s], i])``; distinct splits use distinct entropy words, so their streams are disjoint by
construction. Training (``train.py``) draws fresh ``train`` scenes by index; evaluation uses ``test``.

Connected pieces: ``grammar`` (captions), ``questions`` (QA pairs), ``train``/``evaluate`` (model data), the
``vlmflow toy scenes`` CLI (``write_coco``), and the judge / localization modules that read the COCO output.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vlmflow.atomic import atomic_write_json
from vlmflow.errors import VlmflowError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (235, 210, 0),
    "purple": (140, 40, 190),
    "orange": (250, 130, 0),
}
SIZES: tuple[str, ...] = ("small", "large")
# Object extent as a fraction of the cell side. The default grid has 4 x 4 cells of 32 px, each under 2 x 2 of the
# toy model's 16 px image tokens (128 px image, 8 x 8 tokens): an object covers up to four tokens, so a localization
# target is a few tokens, not one in 64, and every token holds at most one object (train.token_targets relies on it).
# Localization keeps an exact answer: the tokens under the object's mask.
SIZE_FRACTION = {"small": 0.6, "large": 1.0}
BACKGROUND = (225, 225, 225)
POSITIONS: tuple[str, ...] = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
OVERLAP_TOLERANCE_PX = 0  # masks of two objects share no pixel


class SceneConfigError(VlmflowError, ValueError):
    pass


@dataclass(frozen=True, order=True)
class ToyObject:
    """One object's exact identity: the triple the description grammar names and the judge scores."""

    shape: str
    color: str
    size: str


@dataclass(frozen=True)
class SceneConfig:
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    cells: int = 4  # grid side (each cell under 2 x 2 image tokens of the toy model); max_objects <= cells**2
    clutter: float = 0.0  # 0 = plain background; up to 1 = grey strokes + pixel noise

    def __post_init__(self):
        if not 0 <= self.min_objects <= self.max_objects:
            raise SceneConfigError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.max_objects > self.cells ** 2:
            raise SceneConfigError(
                f"max_objects={self.max_objects} does not fit a {self.cells}x{self.cells} grid; raise cells")
        if self.image_size // self.cells < 8:
            raise SceneConfigError(f"cells of {self.image_size // self.cells} px are too small to draw shapes")
        if not 0.0 <= self.clutter <= 1.0:
            raise SceneConfigError(f"clutter must be in [0, 1], got {self.clutter}")

    @staticmethod
    def for_objects(min_objects: int, max_objects: int, image_size: int = 128, clutter: float = 0.0) -> "SceneConfig":
        """A config with the default 4 x 4 grid, grown only when ``max_objects`` does not fit it."""
        cells = max(SceneConfig.cells, math.ceil(math.sqrt(max(max_objects, 1))))
        return SceneConfig(image_size, min_objects, max_objects, cells, clutter)


@dataclass
class SceneObject:
    object: ToyObject
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels (COCO), tight around the mask
    mask: np.ndarray = field(repr=False)  # bool[H, W]
    position: str
    cell: int  # row-major cell index: the reading order


@dataclass
class Scene:
    seed: tuple[int, ...]  # the SeedSequence entropy that reproduces it
    image: Image.Image
    objects: list[SceneObject]  # reading order

    @property
    def toy_objects(self) -> list[ToyObject]:
        return [o.object for o in self.objects]

    @property
    def description(self) -> str:
        from vlmflow.toy.grammar import describe

        return describe(self.toy_objects)


def _shape_mask(shape: str, side: int) -> np.ndarray:
    """bool[side, side]: the shape drawn aliased in a side x side box (exact pixels, no anti-aliasing)."""
    canvas = Image.new("1", (side, side), 0)
    d = ImageDraw.Draw(canvas)
    s = side - 1
    if shape == "circle":
        d.ellipse([0, 0, s, s], fill=1)
    elif shape == "square":
        m = round(side * 0.08)
        d.rectangle([m, m, s - m, s - m], fill=1)
    elif shape == "triangle":
        d.polygon([(s / 2, 0), (s, s), (0, s)], fill=1)
    elif shape == "cross":
        t = max(2, round(side * 0.34))
        a = (side - t) // 2
        d.rectangle([a, 0, a + t - 1, s], fill=1)
        d.rectangle([0, a, s, a + t - 1], fill=1)
    elif shape == "ring":
        d.ellipse([0, 0, s, s], fill=1)
        h = max(2, round(side * 0.28))
        d.ellipse([h, h, s - h, s - h], fill=0)
    else:
        raise SceneConfigError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return np.array(canvas, dtype=bool)


ROW_WORDS: tuple[str, ...] = ("top", "center", "bottom")  # the two axes of a position word
COLUMN_WORDS: tuple[str, ...] = ("left", "center", "right")


def position_word(cx: float, cy: float, width: int, height: int) -> str:
    col = min(2, int(3 * cx / width))
    row = min(2, int(3 * cy / height))
    return POSITIONS[3 * row + col]


def position_axes(word: str) -> tuple[str, str]:
    """A position word -> (row word, column word): "top left" -> (top, left), "top" -> (top, center), "left" ->
    (center, left), "center" -> (center, center). ValueError for a word that is not in POSITIONS."""
    index = POSITIONS.index(word)
    return ROW_WORDS[index // 3], COLUMN_WORDS[index % 3]


def scene_settings_id(config: "SceneConfig" = None) -> str:
    """10 hex digits naming the scene settings (the default config when None): result folders and sweep data ids of
    toy scenes carry it, so results computed on scenes of another default are never read back as today's."""
    from dataclasses import asdict

    from vlmflow.store import settings_hash

    return settings_hash(asdict(config or SceneConfig()))[:10]


def scene_seed(seed: int, split: str, index: int) -> tuple[int, int, int]:
    if split not in SPLIT_CODES:
        raise SceneConfigError(f"unknown split {split!r}; known: {', '.join(SPLIT_CODES)}")
    return (int(seed), SPLIT_CODES[split], int(index))


def make_scene(seed: int, split: str = "train", index: int = 0, config: SceneConfig = SceneConfig()) -> Scene:
    """Scene ``index`` of ``split`` for ``seed``: the same arguments always give the same pixels and objects."""
    entropy = scene_seed(seed, split, index)
    rng = np.random.default_rng(np.random.SeedSequence(list(entropy)))
    n = int(rng.integers(config.min_objects, config.max_objects + 1))
    cells = np.sort(rng.choice(config.cells ** 2, size=n, replace=False))
    objects = [place_object(random_object(rng), int(cell), rng, config) for cell in cells]
    return Scene(entropy, render(objects, config, entropy), objects)


def random_object(rng: np.random.Generator) -> ToyObject:
    """A uniformly drawn (shape, colour, size) triple (three draws from ``rng``, in that order)."""
    return ToyObject(
        shape=SHAPES[rng.integers(len(SHAPES))],
        color=list(COLORS)[rng.integers(len(COLORS))],
        size=SIZES[rng.integers(len(SIZES))],
    )


def place_object(obj: ToyObject, cell: int, rng: np.random.Generator, config: SceneConfig) -> SceneObject:
    """``obj`` at a random jitter (two draws from ``rng``) inside grid cell ``cell``: its exact mask, box and
    position word. Painting is ``render``'s job, so a clip (``clips.py``) can move or recolour a placed object."""
    W = H = config.image_size
    cell_px = W // config.cells
    offset = (W - cell_px * config.cells) // 2  # centre the grid when image_size is not a multiple
    side = max(5, round(cell_px * SIZE_FRACTION[obj.size]))
    side = min(side, cell_px - 2)  # one-pixel margin on each side of the cell
    r, c = divmod(int(cell), config.cells)
    x0 = offset + c * cell_px + 1 + int(rng.integers(0, cell_px - 2 - side + 1))
    y0 = offset + r * cell_px + 1 + int(rng.integers(0, cell_px - 2 - side + 1))
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y0 + side, x0:x0 + side] = _shape_mask(obj.shape, side)
    ys, xs = np.nonzero(mask)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
    return SceneObject(obj, bbox, mask, position_word(x0 + side / 2, y0 + side / 2, W, H), int(cell))


def render(objects: list[SceneObject], config: SceneConfig, entropy: tuple[int, ...]) -> Image.Image:
    """The scene's pixels: background, clutter (its own stream from ``entropy``, so a scene with clutter has the
    same objects as without, and every frame of a clip the same background), the objects' masks in flat colour,
    then pixel noise over everything (masks stay the painted regions)."""
    pixels = np.empty((config.image_size, config.image_size, 3), dtype=np.uint8)
    pixels[:] = BACKGROUND
    clutter_rng = np.random.default_rng(np.random.SeedSequence([*entropy, 99]))
    if config.clutter > 0:
        _draw_clutter(pixels, clutter_rng, config.clutter)
    for o in objects:
        pixels[o.mask] = COLORS[o.object.color]
    if config.clutter > 0:
        noise = clutter_rng.normal(0, 12 * config.clutter, size=pixels.shape)
        pixels = np.clip(pixels.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _draw_clutter(pixels: np.ndarray, rng: np.random.Generator, level: float) -> None:
    """Grey strokes and dots on the background (never coloured, so they cannot pass for objects)."""
    img = Image.fromarray(pixels)
    d = ImageDraw.Draw(img)
    W, H = img.size
    for _ in range(int(round(12 * level))):
        g = int(rng.integers(150, 200))
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, W, size=4))
        d.line([x0, y0, x1, y1], fill=(g, g, g), width=1)
    for _ in range(int(round(30 * level))):
        g = int(rng.integers(150, 200))
        x, y = (int(v) for v in rng.integers(0, W, size=2))
        d.point([x, y], fill=(g, g, g))
    pixels[:] = np.asarray(img)


def make_scenes(seed: int, n: int, split: str = "train", config: SceneConfig = SceneConfig(), start: int = 0):
    return [make_scene(seed, split, start + i, config) for i in range(n)]


def to_coco(scenes: list[Scene], *, file_names: list[str] | None = None, questions: bool = True,
            info: dict | None = None) -> dict:
    """COCO dict: images, annotations (exact RLE masks, bbox, area, category = shape, ``color``, ``size``,
    ``position``), categories (one per shape), ``captions`` (canonical descriptions) and, if asked,
    ``questions`` (see ``questions.scene_questions``)."""
    from pycocotools import mask as mask_utils

    from vlmflow.toy.grammar import describe
    from vlmflow.toy.questions import scene_questions

    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    images, anns, caps, qas = [], [], [], []
    for i, sc in enumerate(scenes):
        image_id = i + 1
        W, H = sc.image.size
        name = file_names[i] if file_names else f"{image_id:06d}.png"
        images.append({"id": image_id, "file_name": name, "width": W, "height": H, "seed": list(sc.seed)})
        for o in sc.objects:
            rle = mask_utils.encode(np.asfortranarray(o.mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({
                "id": len(anns) + 1, "image_id": image_id, "category_id": cat_id[o.object.shape],
                "segmentation": rle, "area": int(o.mask.sum()), "bbox": list(o.bbox), "iscrowd": 0,
                "color": o.object.color, "size": o.object.size, "position": o.position,
            })
        caps.append({"id": image_id, "image_id": image_id, "caption": describe(sc.toy_objects)})
        if questions:
            for q in scene_questions(sc):
                qas.append({"id": len(qas) + 1, "image_id": image_id, **q.to_dict()})
    out = {
        "info": info or {},
        "images": images,
        "annotations": anns,
        "categories": [{"id": cat_id[s], "name": s, "supercategory": "shape"} for s in SHAPES],
        "captions": caps,
        "attributes": {"color": list(COLORS), "size": list(SIZES), "position": list(POSITIONS)},
    }
    if questions:
        out["questions"] = qas
    return out


def write_coco(out_dir: str | os.PathLike, seed: int, n: int, split: str = "test",
               config: SceneConfig = SceneConfig(), progress: bool = True) -> Path:
    """Write ``out_dir/instances.json`` and ``out_dir/images/*.png``; returns the json path."""
    from tqdm import tqdm

    from vlmflow.progress import bar_disabled

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    scenes, names = [], []
    for i in tqdm(range(n), desc=f"toy scenes ({split})", disable=bar_disabled(progress)):
        sc = make_scene(seed, split, i, config)
        name = f"{split}_{i:06d}.png"
        sc.image.save(out / "images" / name)
        scenes.append(sc)
        names.append(name)
    info = {"description": "vlmflow toy scenes", "seed": seed, "split": split, "n": n,
            "config": config.__dict__, "overlap_tolerance_px": OVERLAP_TOLERANCE_PX}
    coco = to_coco(scenes, file_names=names, info=info)
    return atomic_write_json(out / "instances.json", coco)


def covered_tokens(mask: np.ndarray, grid: int) -> np.ndarray:
    """bool[grid * grid]: the image tokens (row-major, ``grid`` per side) that any pixel of an object's ``mask``
    [H, H] falls in (the token probe's and the event probe's targets)."""
    side = mask.shape[0] // grid
    return mask.reshape(grid, side, grid, side).any(axis=(1, 3)).reshape(-1)
