"""Datasets: COCO-format folders (the real COCO sample or toy scenes) -> ground truth per mention, and the loops
that describe each image with its attention recorded and score it (``localize_image``, ``localize_dataset``)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vlmflow.heatmap import token_position
from vlmflow.localize import score as sc  # one generation -> rows, bands, accuracy tables
from vlmflow.localize.base import DEFAULT_TOLERANCE_PX, LocalizationError
from vlmflow.localize.maps import geometry_to_dict
from vlmflow.localize.masks import MaskTokens
from vlmflow.localize.mentions import Mention, mentions

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.adapters.geometry import ImageGeometry
    from vlmflow.model import VLM


def dataset_kind(sample) -> str:
    """``"toy"`` for toy scenes (shape categories with colour/size attributes), else ``"coco"``."""
    from vlmflow.toy.scenes import SHAPES

    cats = {c["name"] for c in sample.coco.cats.values()}
    anns = list(sample.coco.anns.values())[:1]
    return "toy" if cats <= set(SHAPES) and (not anns or "color" in anns[0]) else "coco"


def truth_for(sample, image_id: int, geometry: "ImageGeometry", kind: str, toy_match: str = "exact"):
    """A function Mention -> ObjectTruth for one image. Toy: ``toy_match="exact"`` (default) = instances with the
    named shape and every attribute the text names; ``"shape"`` = every instance of the named shape (lenient, for
    models that get colours wrong). COCO: instances of the category, crowd regions included. Masks are built once
    per annotation."""
    if toy_match not in ("exact", "shape"):
        raise LocalizationError(f"toy_match must be 'exact' or 'shape', got {toy_match!r}")
    cache: dict[int, MaskTokens] = {}
    anns = sample.annotations(image_id)
    cat_name = {c["id"]: c["name"] for c in sample.coco.cats.values()}

    def parts_of(selected):
        out_ids, out = [], []
        for ann in selected:
            if ann["id"] not in cache:
                cache[ann["id"]] = MaskTokens.build(sample.mask(ann).astype(bool), geometry)
            out_ids.append(ann["id"])
            out.append(cache[ann["id"]])
        return sc.ObjectTruth(out_ids, out)

    def lookup(m: Mention) -> sc.ObjectTruth:
        if kind == "toy":
            shape, color, size = m.attributes
            if toy_match == "shape":
                color = size = None
            sel = [a for a in anns if cat_name[a["category_id"]] == shape
                   and (color is None or a.get("color") == color) and (size is None or a.get("size") == size)]
        else:
            sel = [a for a in anns if cat_name[a["category_id"]] == m.category]
        return parts_of(sel)

    return lookup


@dataclass
class LocalizationResult:
    """``objects``: tidy rows (see :func:`localize_generation`) plus ``band``, ``lost``, ``description``; ``images``:
    one row per image (descriptions, KO description, counts); ``provenance``: settings and versions."""

    objects: "pd.DataFrame"
    images: "pd.DataFrame"
    provenance: dict

    def accuracy(self, by: str = "band", subset: str = "all", **kw) -> "pd.DataFrame":
        return sc.accuracy_table(self.objects, by=by, subset=subset, **kw)

    def status(self) -> str:
        """One line for a notebook: images, layers, bands, tolerance unit, and whether the stored runner
        (``stored_localization``) computed images or read them all back."""
        p = self.provenance
        stored = (f"computed {p['computed_images']} images into {p['store']}" if p.get("computed_images")
                  else f"reusing {p['store']}: every image is stored") if "store" in p else "not stored"
        return (f"{len(self.images)} images, {p['n_layers']} decoder layers, bands {p['bands']}, tolerance unit "
                f"{p['unit']}; {stored}")


def localize_dataset(vlm: "VLM", sample, image_ids: Sequence[int] | None = None, n_images: int | None = None, *,
                     kind: str | None = None, question: str = "describe the image", max_new_tokens: int = 64,
                     tolerances: Sequence[float] | None = None, unit: str | None = None,
                     heads: str | Sequence[int] = "mean", row: str = "predicting", instances: str = "any",
                     knockout: bool = True, judge=None, band_width: int | None = None, toy_match: str = "exact",
                     progress: bool = True) -> LocalizationResult:
    """Describe each image with its attention recorded, find the naming tokens, score their peaks per layer.

    kind: "toy" / "coco" (default: detected from the categories); tolerances / unit: default (0, 1) tokens for the
    toy world, (0, 20, 40, 80) px for COCO; knockout: also describe under KO image->generated (all layers) and mark
    the objects that description loses (``lost``), judged by ``judge`` (default: exact for toy, lexical for COCO).
    COCO categories are scored once per image, at their first naming token; toy mentions are objects (two "small
    blue rings" are two objects, both scored);
    toy_match: see :func:`truth_for`.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from vlmflow.judge import get_judge
    from vlmflow.progress import bar_disabled

    kind = kind or dataset_kind(sample)
    if unit is None:
        unit = "tokens" if kind == "toy" else "px"
    if tolerances is None:
        tolerances = (0, 1) if unit == "tokens" else (0, 20, DEFAULT_TOLERANCE_PX, 80)
    judge = judge or get_judge("exact" if kind == "toy" else "lexical")
    ids = list(image_ids) if image_ids is not None else sample.image_ids
    if n_images is not None:
        ids = ids[:n_images]
    bands = sc.layer_bands(vlm.num_layers, band_width)
    object_rows, image_rows = [], []
    for image_id in tqdm(ids, desc="localize", disable=bar_disabled(progress)):
        rows, image_row = localize_image(vlm, sample, image_id, kind=kind, question=question,
                                         max_new_tokens=max_new_tokens, tolerances=tolerances, unit=unit, heads=heads,
                                         row=row, instances=instances, knockout=knockout, judge=judge, bands=bands,
                                         toy_match=toy_match)
        object_rows.extend(rows)
        image_rows.append(image_row)
    import torch
    import transformers

    provenance = {"model": vlm.name, "adapter": vlm.adapter.name, "n_layers": vlm.num_layers, "kind": kind,
                  "question": question, "max_new_tokens": max_new_tokens, "tolerances": list(map(float, tolerances)),
                  "unit": unit, "heads": heads if isinstance(heads, str) else list(heads), "row": row,
                  "instances": instances, "toy_match": toy_match if kind == "toy" else None,
                  "knockout": "image:generated@all" if knockout else None,
                  "judge": judge.provenance(), "bands": bands, "image_ids": ids, "data": str(sample.root),
                  "torch": torch.__version__, "transformers": transformers.__version__}
    return LocalizationResult(pd.DataFrame(object_rows, columns=OBJECT_COLUMNS), pd.DataFrame(image_rows), provenance)


OBJECT_COLUMNS = ["image_id", "object", "category", "word", "occurrence", "token", "position", "layer", "band",
                  "tolerance", "unit", "peak_token", "peak_x", "peak_y", "present", "n_instances", "instances", "hit",
                  "chance", "chance_area", "distance", "nearest_annotation", "mass_in", "mask_share", "mass_ratio",
                  "lost"]


def localize_image(vlm: "VLM", sample, image_id, *, kind: str, question: str, max_new_tokens: int,
                   tolerances: Sequence[float], unit: str, heads, row: str, instances: str, knockout: bool, judge,
                   bands: Sequence[tuple[int, int]], toy_match: str = "exact",
                   keep_maps: bool = False) -> tuple[list[dict], dict]:
    """One image of :func:`localize_dataset`: (object rows, image row). ``keep_maps`` adds to the image row what a
    heatmap figure needs without the model: ``maps`` {"<object>#<occurrence>": float[L][N] attention of the naming
    token's row} and ``geometry_data`` (:func:`geometry_to_dict`)."""
    from vlmflow.knockout import Knockout

    vocabulary = getattr(judge, "vocabulary", None) if kind == "coco" else None
    image = sample.image(image_id)
    batch = vlm.prepare(image, question)
    geometry = vlm.adapter.geometry(image.size, batch.inputs, 0)
    gen = vlm.generate_batch(batch, record=sc.record_for(heads), max_new_tokens=max_new_tokens)[0]
    found = mentions(gen, vlm.tokenizer, kind, vocabulary)
    if kind == "coco":  # categories count as sets (as the lexical judge does): the first naming token each
        found = [m for m in found if m.occurrence == 0]
    lost_names: set[str] | None = None
    ko_text = None
    if knockout:
        ko_gen = vlm.generate_batch(batch, knockout=Knockout(source="image", target="generated"),
                                    max_new_tokens=max_new_tokens)[0]
        ko_text = ko_gen.text
        j = judge.judge(gen.text, ko_text)
        lost_names = set(j.fn) if j.ok else None
    rows = sc.localize_generation(gen, geometry, found, truth_for(sample, image_id, geometry, kind, toy_match),
                               tolerances=tolerances, unit=unit, heads=heads, row=row, instances=instances,
                               image_id=image_id)
    for r in rows:
        r["band"] = sc.band_label(r["layer"], bands)
        r["lost"] = (r["object"] in lost_names) if lost_names is not None else None
    image_row = {"image_id": image_id, "description": gen.text, "ko_description": ko_text,
                 "n_mentions": len(found), "n_generated": len(gen.token_ids),
                 "n_image_tokens": geometry.n_tokens, "geometry": geometry.method}
    if keep_maps:
        maps = sc.head_aggregate(gen.record.image_map, heads)  # [R, L, N]
        positions = gen.record.row_positions.tolist()
        image_row["maps"] = {}
        for m in found:
            pos = token_position(gen.prompt_length, m.token, row)
            if pos in positions:
                image_row["maps"][f"{m.name}#{m.occurrence}"] = maps[positions.index(pos)].round(6).tolist()
        image_row["geometry_data"] = geometry_to_dict(geometry)
    return rows, image_row


def load_sample(data: str, n_images: int | None = None, seed: int = 0, folder: str | None = None):
    """The COCO-format sample a figure reads, through `vlmflow.data.resolve`: a toy split (``"toy-test"``) writes its
    first ``n_images`` seeded scenes (the same scenes as the sweeps': ``make_scene(seed, "test", i)``) into ``folder``
    once (exact masks, questions) and reads them back; ``"coco-sample"`` the shipped COCO sample; else a COCO folder
    or its ``instances.json``."""
    from vlmflow.data import resolve

    return resolve(data, n_images, seed).coco(folder)
