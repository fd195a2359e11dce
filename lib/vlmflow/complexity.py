"""Visual complexity (the paper's second open question): do the mechanisms hold as scenes get harder?

Where it sits: the toy scene generator (``vlmflow.toy.scenes``) controls how complex a scene is; this module turns
its parameters into axes of scene sets, sweep items (``vlmflow.item_sweep``) and per-scene scores that the notebook
``visual_complexity`` aggregates with bootstrap intervals (``vlmflow.stats``):

- ``objects``: exactly k objects per scene, k = 1..8; the toy model was trained on 1-4 (``in_distribution``), 5-8 are
  outside its training distribution and marked so (``SceneConfig.for_objects``);
- ``clutter``: grey strokes and pixel noise over the background (``SceneConfig.clutter``; 0, 0.5, 1), distractors
  that are not objects; the clutter has its own random stream, so each level shows the same objects. The toy model
  was trained on plain backgrounds only, so every level above 0 is outside its training distribution;
- ``size``: scenes of the default generator whose objects are all ``small`` or all ``large`` (the generator draws
  sizes per object; this axis selects scenes by them, it does not redraw them).

Overlap is not an axis of this toy world: its masks never overlap by construction (``OVERLAP_TOLERANCE_PX = 0``).

Per scene, :func:`localization_rows` says where the baseline's naming tokens look (:func:`naming_positions`) and
:func:`image_entropy` how spread its attention over the image tokens is (1 = uniform); for real images
:func:`rank_by_object_count` orders annotated images by how many objects they hold.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.item_sweep import SweepItem
    from vlmflow.toy.scenes import Scene

AXES = {"objects": (1, 2, 3, 4, 5, 6, 7, 8), "clutter": (0.0, 0.5, 1.0), "size": ("small", "large")}
TRAINED_OBJECTS = (1, 4)  # the toy model's training range of objects per scene (MODEL_CARD.md)
QUESTION = "describe the image"


class ComplexityError(VlmflowError):
    pass


def _size_indices(size: str, n: int, seed: int) -> list[int]:
    """The first ``n`` default test scenes whose objects all have ``size``."""
    from vlmflow.toy.scenes import make_scene

    out, i = [], 0
    while len(out) < n:
        if i > 200 * n + 1000:
            raise ComplexityError(f"found only {len(out)} scenes of all-{size} objects in {i} scenes")
        if {o.size for o in make_scene(seed, "test", i).toy_objects} == {size}:
            out.append(i)
        i += 1
    return out


def complexity_scene(axis: str, level, index: int, seed: int = 0) -> "Scene":
    """Scene ``index`` of one level of one axis (deterministic)."""
    from vlmflow.toy.scenes import SceneConfig, make_scene

    if axis == "objects":
        return make_scene(seed, "test", index, SceneConfig.for_objects(int(level), int(level)))
    if axis == "clutter":
        return make_scene(seed, "test", index, SceneConfig(clutter=float(level)))
    if axis == "size":
        return make_scene(seed, "test", index)
    raise ComplexityError(f"unknown complexity axis {axis!r}; known: {', '.join(AXES)}")


def complexity_items(n_per_level: int, seed: int = 0, axes: Sequence[str] = tuple(AXES)) -> list["SweepItem"]:
    """One describe item per scene of every level of every axis, labelled ``axis``, ``level`` (as text),
    ``scene`` (its index), ``in_distribution`` and ``truth`` (the canonical description)."""
    from vlmflow.item_sweep import SweepItem, item_key

    items = []
    for axis in axes:
        if axis not in AXES:
            raise ComplexityError(f"unknown complexity axis {axis!r}; known: {', '.join(AXES)}")
        for level in AXES[axis]:
            indices = _size_indices(level, n_per_level, seed) if axis == "size" else range(int(n_per_level))
            for i in indices:
                scene = complexity_scene(axis, level, i, seed)
                inside = not ((axis == "objects" and not TRAINED_OBJECTS[0] <= int(level) <= TRAINED_OBJECTS[1])
                              or (axis == "clutter" and float(level) > 0))
                items.append(SweepItem(
                    item_key(f"cx-{axis}-{level}-{i:05d}", QUESTION), f"cx-{axis}-{level}-{i:05d}", QUESTION,
                    load=(lambda a=axis, v=level, j=i: complexity_scene(a, v, j, seed).image),
                    labels=(("axis", axis), ("level", str(level)), ("scene", int(i)), ("in_distribution", inside),
                            ("truth", scene.description))))
    return items


def image_entropy(image_map: np.ndarray) -> float:
    """Normalised entropy of attention over the image tokens: H(p) / log N with p the map divided by its sum
    (1 = uniform over the N tokens, 0 = all on one token; NaN for a map with no mass)."""
    a = np.asarray(image_map, dtype=float).reshape(-1)
    total = a.sum()
    if a.size < 2 or not total > 0:
        return float("nan")
    p = a[a > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(a.size))


def naming_positions(token_ids: Sequence[int], tokenizer) -> list[tuple[int, tuple[str, str, str]]]:
    """(index of the generated token that names an object, its (shape, colour, size)) for a toy description:
    ``vlmflow.localize.mentions`` on the token ids (the word that completes each object phrase)."""
    from types import SimpleNamespace

    from vlmflow.localize.mentions import mentions

    found = mentions(SimpleNamespace(token_ids=list(token_ids)), tokenizer, "toy")
    return [(m.token, m.attributes) for m in found]


def localization_rows(scene: "Scene", token_ids: Sequence[int], maps: dict[int, np.ndarray], geometry,
                      tokenizer) -> list[dict]:
    """One row per (naming token, layer) of a baseline description: does the peak of the row that predicts the
    naming token fall on a token over the named object (any instance of its shape, colour and size), and the
    chance of that (the share of such tokens). ``maps[t]``: float[L, N] image map of the row that predicts
    generated token t. Objects the scene does not hold (hallucinated) are left out."""
    from vlmflow.localize.masks import MaskTokens

    by_triple: dict[tuple, np.ndarray] = {}
    for o in scene.objects:
        key = (o.object.shape, o.object.color, o.object.size)
        hits = MaskTokens.build(o.mask, geometry).hits(0, "tokens")
        by_triple[key] = by_triple[key] | hits if key in by_triple else hits
    rows = []
    for t, attrs in naming_positions(token_ids, tokenizer):
        hits = by_triple.get(tuple(attrs))
        if hits is None or t not in maps:
            continue
        for layer, m in enumerate(maps[t]):
            rows.append({"token": int(t), "layer": layer, "hit": float(hits[int(np.argmax(m))]),
                         "chance": float(hits.mean()), "mass_in": float((m * hits).sum() / max(m.sum(), 1e-12))})
    return rows


def rank_by_object_count(sample, image_ids: Sequence[int] | None = None) -> "pd.DataFrame":
    """Annotated images ordered by how many object instances they hold (most first): ``image_id``, ``n_objects``
    (instances), ``n_categories`` (distinct categories). ``sample``: a ``vlmflow.data.coco.CocoSample``."""
    import pandas as pd

    ids = list(sample.image_ids if image_ids is None else image_ids)
    rows = []
    for image_id in ids:
        anns = sample.annotations(int(image_id))
        rows.append({"image_id": int(image_id), "n_objects": len(anns),
                     "n_categories": len({a["category_id"] for a in anns})})
    df = pd.DataFrame(rows, columns=["image_id", "n_objects", "n_categories"])
    return df.sort_values(["n_objects", "image_id"], ascending=[False, True]).reset_index(drop=True)


__all__ = ["AXES", "QUESTION", "TRAINED_OBJECTS", "ComplexityError", "complexity_items", "complexity_scene",
           "image_entropy", "localization_rows", "naming_positions", "rank_by_object_count"]
