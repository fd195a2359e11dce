"""Localization accuracy (Figures 6-7): does the generated token that names an object look at that object?

Data flow. ``vlm.generate`` (``vlmflow.model``) with a ``Record`` over the rows that predict output tokens gives each
generated token's attention over the image tokens per layer (``AttentionRecord.image_map``); the adapter's
``geometry`` (``vlmflow.adapters.geometry``) maps every image token to a box in ORIGINAL pixels; ground-truth masks
come from a COCO-format folder (``vlmflow.data.CocoSample``: pycocotools masks for COCO, the exact masks of the toy
scenes). This module joins them:

1. **Naming tokens** (:func:`mentions`): toy descriptions go through ``vlmflow.toy.grammar.parse`` (the shape word
   that completes each object phrase names that object); English descriptions through the lexical judge's CHAIR
   vocabulary (``vlmflow.judge.lexical``: the last word of each category phrase). Each mention is mapped to the
   generated token holding its first character (char offsets from incremental decoding, so subword tokenizers
   work).
2. **Which attention row.** ``row="predicting"`` (default, as the official code stored it): the row that *outputs*
   the naming token, i.e. position ``prompt_length + i - 1`` for generated token i (the last prompt position for
   the first token); ``row="fed"``: the row where the token is fed back. Heads: ``"mean"`` (the paper), ``"max"``,
   or a list of head indices (averaged).
3. **Hit rule** (:class:`MaskTokens`). The peak is the image token with the most attention; its location is the
   pixel holding its box centre. Pixel tolerance (COCO, 40 px default as in the paper): hit when that pixel lies in
   the mask dilated (Euclidean) by the tolerance. Token tolerance (toy world, exact masks): hit when the peak token
   is within k tokens (Chebyshev, on its own tile/grid) of a token whose box overlaps the mask; k = 0 means the
   peak token itself overlaps the object. A peak on a token that covers only preprocessing padding is a miss.
4. **Several instances of a category** (``instances=``): ``"any"`` (default) scores against the union of the
   instances; ``"nearest"`` against the single instance nearest the peak. Under both distance rules the two give the
   same hit (the peak is within tolerance of the union iff it is within tolerance of its nearest instance); they
   differ in the baselines: ``chance`` and the mass ratio use the union for ``"any"`` and the one instance for
   ``"nearest"`` (stricter: one instance covers less of the image).
5. **Baselines beside every number.** ``chance`` = the share of image tokens on which a peak would score a hit
   (what a uniformly random peak scores); ``chance_area`` = the share of the image the dilated mask covers (the
   issue's wording; pixel rule only). Uniform baseline of the map (issue 8): ``mass_in`` = the attention mass on the
   object (each token weighted by the share of its box inside the mask), ``mask_share`` = what uniform attention
   over the image tokens would put there, ``mass_ratio`` = mass_in / mask_share (1 = no better than uniform).
6. **Aggregates** (:func:`accuracy_table`): accuracy per layer or layer band with bootstrap CIs over images
   (``vlmflow.stats.groupby_ci``), for all named objects and for the paper's subset (``lost=True``: objects in the
   unmasked description that the KO image->generated description loses, judged by the same judge).

Outputs are tidy pandas DataFrames (one row per mention x layer x tolerance). Heatmaps: :func:`attention_heatmap`
returns arrays, :func:`plot_heatmaps` draws them with ``vlmflow.figures.heatmap_overlay``.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.adapters.geometry import ImageGeometry
    from vlmflow.model import VLM, Generation
    from vlmflow.record import AttentionRecord

DEFAULT_TOLERANCE_PX = 40.0
DEFAULT_TOLERANCE_TOKENS = 0
ROWS = ("last_prompt", "generated")  # every position that predicts an output token


class LocalizationError(VlmflowError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# 1. naming tokens

@dataclass(frozen=True)
class Mention:
    """One object named in a generated text. ``name``: the toy ``"size color shape"`` (attributes the text left out
    are omitted) or the COCO category; ``attributes``: the toy (shape, color, size) with None for unnamed ones;
    ``char``: offset of the naming word in the decoded text; ``token``: index into the generated tokens."""

    name: str
    category: str
    word: str
    char: int
    token: int = -1
    attributes: tuple[str | None, str | None, str | None] | None = None
    occurrence: int = 0  # 0 for the first mention of this name in the text, 1 for the second...


def token_spans(tokenizer, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """(decoded text, [start, end) char span of every token in it), by incremental decoding (works for subword,
    sentencepiece and word-level tokenizers alike). Special tokens decode to empty spans."""
    spans, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True)
        start = len(prev) if text.startswith(prev) else _common_prefix(prev, text)
        spans.append((start, len(text)))
        prev = text
    return prev, spans


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


_TOY_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def toy_mentions(text: str) -> list[Mention]:
    """Objects named in a toy description, each at the shape word that completes its phrase (``grammar.parse`` on
    growing prefixes, so the rules are exactly the parser's; "two red circles" gives two mentions at "circles")."""
    from vlmflow.judge.exact import object_name
    from vlmflow.toy.grammar import parse

    low = text.lower()
    out: list[Mention] = []
    seen: dict[str, int] = {}
    n_prev = 0
    for m in _TOY_WORD.finditer(low):
        objs = parse(low[: m.end()])
        for obj in objs[n_prev:]:
            name = object_name(obj)
            out.append(Mention(name, obj.shape, m.group(), m.start(), attributes=(obj.shape, obj.color, obj.size),
                               occurrence=seen.get(name, 0)))
            seen[name] = seen.get(name, 0) + 1
        n_prev = len(objs)
    return out


def coco_mentions(text: str, vocabulary=None) -> list[Mention]:
    """COCO categories named in an English text: the lexical judge's greedy longest phrase match over the CHAIR
    synonyms, with char offsets; the naming word is the phrase's last word ("hot **dog**", "wine **glasses**")."""
    from vlmflow.judge.lexical import MAX_PHRASE, LexicalJudge

    vocab = vocabulary or LexicalJudge().vocabulary
    # same normalisation as lexical.words(), offsets kept: "'s" becomes two spaces
    low = text.lower().replace("'s", "  ").replace("\u2019s", "  ")
    toks = [(m.group(), m.start()) for m in re.finditer(r"[a-z]+", low)]
    found: list[Mention] = []
    i = 0
    while i < len(toks):
        for n in range(min(MAX_PHRASE, len(toks) - i), 0, -1):
            category = vocab.surface.get(tuple(w for w, _ in toks[i:i + n]))
            if category is not None:
                word, start = toks[i + n - 1]
                found.append(Mention(category, category, word, start))
                i += n
                break
        else:
            i += 1
    if any(m.category == "toilet" for m in found):  # CHAIR: a toilet's "seat" is not a chair
        found = [m for m in found if not (m.category == "chair" and m.word in ("seat", "seats"))]
    seen: dict[str, int] = {}
    out = []
    for m in found:
        out.append(Mention(m.name, m.category, m.word, m.char, occurrence=seen.get(m.name, 0)))
        seen[m.name] = seen.get(m.name, 0) + 1
    return out


def mentions(gen: "Generation", tokenizer, kind: str, vocabulary=None) -> list[Mention]:
    """The objects ``gen`` names, each with the index of the generated token that holds its naming word."""
    text, spans = token_spans(tokenizer, gen.token_ids)
    if kind == "toy":
        found = toy_mentions(text)
    elif kind == "coco":
        found = coco_mentions(text, vocabulary)
    else:
        raise LocalizationError(f"unknown mention kind {kind!r}; use 'toy' or 'coco'")
    out = []
    for m in found:
        tok = next((i for i, (s, e) in enumerate(spans) if e > m.char and e > s), -1)
        if tok < 0:
            raise LocalizationError(f"no generated token covers char {m.char} ({m.word!r}) of {text!r}")
        out.append(Mention(m.name, m.category, m.word, m.char, tok, m.attributes, m.occurrence))
    return out


# ---------------------------------------------------------------------------------------------------------------
# 2. masks -> per-token hit rules

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


# ---------------------------------------------------------------------------------------------------------------
# 3. one generation -> tidy rows

def head_aggregate(image_map, heads: str | Sequence[int] = "mean") -> np.ndarray:
    """float[R, L, N] from ``AttentionRecord.image_map`` ([R, L, N] head-mean, or [R, L, H, N] per head):
    ``"mean"``, ``"max"`` over heads, or the mean over the listed head indices."""
    m = np.asarray(image_map.float() if hasattr(image_map, "float") else image_map, dtype=float)
    if m.ndim == 3:
        if heads != "mean":
            raise LocalizationError(f"heads={heads!r} needs a per-head record: Record(heads='all')")
        return m
    if heads == "mean":
        return m.mean(2)
    if heads == "max":
        return m.max(2)
    idx = [int(h) for h in heads]
    bad = [h for h in idx if not 0 <= h < m.shape[2]]
    if bad:
        raise LocalizationError(f"head index {bad[0]} out of range: the record has {m.shape[2]} heads")
    return m[:, :, idx].mean(2)


def record_for(heads: str | Sequence[int]):
    """The ``Record`` localization needs for this head aggregation."""
    from vlmflow.record import Record

    return Record(rows=ROWS, layers=None, heads="mean" if heads == "mean" else "all")


@dataclass
class ObjectTruth:
    """Ground truth for one category (toy: a shape with attributes) in one image: its instance masks."""

    annotation_ids: list[int]
    parts: list[MaskTokens]

    @property
    def present(self) -> bool:
        return bool(self.parts)


def localize_generation(gen: "Generation", geometry: "ImageGeometry", found: Sequence[Mention],
                        truth: dict[Mention, ObjectTruth] | Any, *, tolerances: Sequence[float], unit: str = "px",
                        heads: str | Sequence[int] = "mean", row: str = "predicting", instances: str = "any",
                        image_id: Any = None) -> list[dict]:
    """One row per (mention, layer, tolerance): the peak, hit, chance, mass ratio. ``truth(mention) -> ObjectTruth``
    (a callable or a dict). Mentions of objects that are not in the image (hallucinated) get ``present=False`` and
    NaN scores, and are left out of accuracies by :func:`accuracy_table`."""
    rec: AttentionRecord | None = gen.record
    if rec is None:
        raise LocalizationError("the generation carries no attention record: generate with record=record_for(heads)")
    if instances not in ("any", "nearest"):
        raise LocalizationError(f"instances must be 'any' or 'nearest', got {instances!r}")
    if rec.image_map.shape[-1] != geometry.n_tokens:
        raise LocalizationError(f"the record has {rec.image_map.shape[-1]} image tokens but the geometry "
                                f"{geometry.n_tokens} ({geometry.method})")
    maps = head_aggregate(rec.image_map, heads)  # [R, L, N]
    positions = rec.row_positions.tolist()
    centres = geometry.box_centers()
    lookup = truth if callable(truth) else truth.__getitem__
    rows = []
    for m in found:
        pos = gen.prompt_length + m.token - (1 if row == "predicting" else 0)
        if row not in ("predicting", "fed"):
            raise LocalizationError(f"row must be 'predicting' or 'fed', got {row!r}")
        if pos not in positions:  # e.g. the last token of a run cut at max_new_tokens is never fed back
            continue
        r = positions.index(pos)
        obj: ObjectTruth = lookup(m)
        union = MaskTokens.union(obj.parts) if obj.present else None
        for li, layer in enumerate(rec.layers):
            a = maps[r, li]
            peak = int(np.nanargmax(a))
            base = {"image_id": image_id, "object": m.name, "category": m.category, "word": m.word,
                    "occurrence": m.occurrence, "token": m.token, "position": pos, "layer": int(layer),
                    "peak_token": peak, "peak_x": float(centres[peak, 0]) if geometry.valid[peak] else np.nan,
                    "peak_y": float(centres[peak, 1]) if geometry.valid[peak] else np.nan,
                    "present": obj.present, "n_instances": len(obj.parts), "instances": instances}
            if not obj.present:
                for tol in tolerances:
                    rows.append({**base, "tolerance": float(tol), "unit": unit, "hit": np.nan, "chance": np.nan,
                                 "chance_area": np.nan, "distance": np.nan, "nearest_annotation": None,
                                 "mass_in": np.nan, "mask_share": np.nan, "mass_ratio": np.nan})
                continue
            dists = [p.distance(unit)[peak] for p in obj.parts]
            k = int(np.argmin(dists))
            target = union if instances == "any" else obj.parts[k]
            mass_in, share = mass_inside(a, target)
            for tol in tolerances:
                hits = target.hits(tol, unit)
                rows.append({**base, "tolerance": float(tol), "unit": unit,
                             "hit": bool(union.hits(tol, unit)[peak]), "chance": float(hits.mean()),
                             "chance_area": target.area_share(tol) if unit == "px" else np.nan,
                             "distance": float(dists[k]), "nearest_annotation": obj.annotation_ids[k],
                             "mass_in": mass_in, "mask_share": share,
                             "mass_ratio": mass_in / share if share > 0 else np.nan})
    return rows


# ---------------------------------------------------------------------------------------------------------------
# 4. datasets: COCO-format folders (the real COCO sample or toy scenes)

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
        return ObjectTruth(out_ids, out)

    def lookup(m: Mention) -> ObjectTruth:
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


def layer_bands(n_layers: int, width: int | None = None) -> list[tuple[int, int]]:
    """Half-open [start, stop) bands of ``width`` layers (default ceil(L/8), at least 2: 10 for an 80-layer model as
    in the paper's figure, 4 for 32 layers, 2 for the 8-layer toy model)."""
    width = width or max(2, math.ceil(n_layers / 8))
    return [(s, min(s + width, n_layers)) for s in range(0, n_layers, width)]


def band_label(layer: int, bands: Sequence[tuple[int, int]]) -> str:
    for s, e in bands:
        if s <= layer < e:
            return f"{s}-{e - 1}"
    raise LocalizationError(f"layer {layer} is in no band of {list(bands)}")


@dataclass
class LocalizationResult:
    """``objects``: tidy rows (see :func:`localize_generation`) plus ``band``, ``lost``, ``description``; ``images``:
    one row per image (descriptions, KO description, counts); ``provenance``: settings and versions."""

    objects: "pd.DataFrame"
    images: "pd.DataFrame"
    provenance: dict

    def accuracy(self, by: str = "band", subset: str = "all", **kw) -> "pd.DataFrame":
        return accuracy_table(self.objects, by=by, subset=subset, **kw)


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
    from vlmflow.progress import bar_disabled

    from vlmflow.judge import get_judge

    kind = kind or dataset_kind(sample)
    if unit is None:
        unit = "tokens" if kind == "toy" else "px"
    if tolerances is None:
        tolerances = (0, 1) if unit == "tokens" else (0, 20, DEFAULT_TOLERANCE_PX, 80)
    judge = judge or get_judge("exact" if kind == "toy" else "lexical")
    ids = list(image_ids) if image_ids is not None else sample.image_ids
    if n_images is not None:
        ids = ids[:n_images]
    bands = layer_bands(vlm.num_layers, band_width)
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
    gen = vlm.generate_batch(batch, record=record_for(heads), max_new_tokens=max_new_tokens)[0]
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
    rows = localize_generation(gen, geometry, found, truth_for(sample, image_id, geometry, kind, toy_match),
                               tolerances=tolerances, unit=unit, heads=heads, row=row, instances=instances,
                               image_id=image_id)
    for r in rows:
        r["band"] = band_label(r["layer"], bands)
        r["lost"] = (r["object"] in lost_names) if lost_names is not None else None
    image_row = {"image_id": image_id, "description": gen.text, "ko_description": ko_text,
                 "n_mentions": len(found), "n_generated": len(gen.token_ids),
                 "n_image_tokens": geometry.n_tokens, "geometry": geometry.method}
    if keep_maps:
        maps = head_aggregate(gen.record.image_map, heads)  # [R, L, N]
        positions = gen.record.row_positions.tolist()
        image_row["maps"] = {}
        for m in found:
            pos = gen.prompt_length + m.token - (1 if row == "predicting" else 0)
            if pos in positions:
                image_row["maps"][f"{m.name}#{m.occurrence}"] = maps[positions.index(pos)].round(6).tolist()
        image_row["geometry_data"] = geometry_to_dict(geometry)
    return rows, image_row


def geometry_to_dict(geometry: "ImageGeometry") -> dict:
    """A JSON-able ImageGeometry (stored beside the maps so a rerun draws heatmaps without the model)."""
    return {"image_size": list(geometry.image_size), "boxes": np.asarray(geometry.boxes).tolist(),
            "blocks": [list(b) for b in geometry.blocks],
            "content": list(geometry.content) if geometry.content is not None else None, "method": geometry.method}


def geometry_from_dict(d: dict) -> "ImageGeometry":
    from vlmflow.adapters.geometry import Block, ImageGeometry

    return ImageGeometry(tuple(d["image_size"]), np.asarray(d["boxes"], dtype=float), [Block(*b) for b in d["blocks"]],
                         tuple(d["content"]) if d["content"] is not None else None, d["method"])


def load_sample(data: str, n_images: int | None = None, seed: int = 0, folder: str | None = None):
    """The COCO-format sample a figure reads: ``"toy-test"`` writes the first ``n_images`` seeded toy test scenes (the
    same scenes as the sweeps' ``toy-test``: ``make_scene(seed, "test", i)``) into ``folder`` once (exact masks,
    questions) and reads them back; ``"coco-sample"`` the shipped COCO sample; else a COCO folder."""
    from vlmflow.data import CocoSample, coco_sample

    if data == "toy-test":
        import tempfile
        from pathlib import Path

        from vlmflow.toy.scenes import write_coco

        from vlmflow.toy.scenes import scene_settings_id

        n = 100 if n_images is None else int(n_images)
        out = Path(folder or tempfile.mkdtemp(prefix="vlmflow-toy-")) / f"toy-test-seed{seed}-n{n}-{scene_settings_id()}"
        if not (out / "instances.json").is_file():
            write_coco(out, seed=seed, n=n, split="test", progress=False)
        return CocoSample.from_folder(out)
    if data == "coco-sample":
        return coco_sample(progress=False)
    return CocoSample.from_folder(data)


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def stored_localization(folder, *, model: str = "toy", device: str = "cpu", dtype: str | None = None,
                        data: str = "toy-test", n_images: int = 20, seed: int = 0, judge: str = "exact",
                        judge_options: dict | None = None, n_maps: int = 0, question: str = "describe the image",
                        max_new_tokens: int = 64, tolerances: Sequence[float] | None = None,
                        heads: str | Sequence[int] = "mean", row: str = "predicting", instances: str = "any",
                        toy_match: str = "exact", band_width: int | None = None,
                        progress: bool = True) -> LocalizationResult:
    """:func:`localize_dataset` through a result store (``vlmflow.store``) under ``folder/localize-<settings hash>``:
    one part per image (its object rows and image row as JSON), so a rerun computes only the images it lacks and does
    not load the model when none is missing. The first ``n_maps`` images also keep their attention maps
    (``images.maps`` / ``images.geometry_data``, for Figure 6). The result's ``provenance`` has ``store`` and
    ``computed_images``."""
    import json
    from pathlib import Path

    import pandas as pd

    from vlmflow.book import model_fingerprint
    from vlmflow.judge import get_judge
    from vlmflow.store import MANIFEST, ResultStore, library_versions, load_results, read_manifest, settings_hash

    sample = load_sample(data, n_images, seed, folder)
    kind = dataset_kind(sample)
    unit = "tokens" if kind == "toy" else "px"
    if tolerances is None:
        tolerances = (0, 1) if unit == "tokens" else (0, 20, DEFAULT_TOLERANCE_PX, 80)
    the_judge = get_judge(judge, **(judge_options or {}))
    ids = sample.image_ids[:n_images]
    settings = {"model": model, "weights": model_fingerprint(model), "data": data, "seed": seed,
                "scenes": sample.root.name if data == "toy-test" else None,  # names the scene settings (load_sample)
                "question": question, "max_new_tokens": int(max_new_tokens), "device": device, "dtype": str(dtype),
                "tolerances": [float(t) for t in tolerances], "unit": unit, "heads": heads if isinstance(heads, str)
                else list(heads), "row": row, "instances": instances, "toy_match": toy_match,
                "band_width": band_width, "judge": the_judge.provenance(), **library_versions()}
    path = Path(folder) / f"localize-{settings_hash(settings)}"
    n_layers = read_manifest(path).get("provenance", {}).get("n_layers") if (path / MANIFEST).is_file() else None
    vlm = None
    if n_layers is None:
        from vlmflow.model import load

        vlm = load(model, device=device, dtype=dtype)
        n_layers = vlm.num_layers
    store = ResultStore(path, settings, provenance={"n_layers": int(n_layers), "model": model, "kind": kind})
    done = store.done()
    want = {str(i): i for i in ids}
    need = [(key, i, k < n_maps) for k, (key, i) in enumerate(want.items())
            if (key, "maps" if k < n_maps else "rows") not in done]
    if need:
        from tqdm.auto import tqdm
        from vlmflow.progress import bar_disabled

        if vlm is None:
            from vlmflow.model import load

            vlm = load(model, device=device, dtype=dtype)
        bands = layer_bands(vlm.num_layers, band_width)
        for key, image_id, keep in tqdm(need, desc="localize", disable=bar_disabled(progress)):
            rows, image_row = localize_image(vlm, sample, image_id, kind=kind, question=question,
                                             max_new_tokens=max_new_tokens, tolerances=tolerances, unit=unit,
                                             heads=heads, row=row, instances=instances, knockout=True,
                                             judge=the_judge, bands=bands, toy_match=toy_match, keep_maps=keep)
            store.write_part(key, [{"image": key, "spec_id": "maps" if keep else "rows",
                                    "objects": json.dumps(rows, default=_json_default),
                                    "image_row": json.dumps(image_row, default=_json_default)}])
    stored = load_results(path)
    stored = stored[stored.image.isin(list(want))]
    # an image stored with maps also serves a run that needs none
    stored = stored.sort_values("spec_id").drop_duplicates("image", keep="first")
    objects = pd.DataFrame([r for text in stored.objects for r in json.loads(text)], columns=OBJECT_COLUMNS)
    images = pd.DataFrame([json.loads(text) for text in stored.image_row])
    order = {i: k for k, i in enumerate(ids)}
    images = images.sort_values("image_id", key=lambda c: c.map(order)).reset_index(drop=True)
    provenance = {**read_manifest(path)["settings"], "bands": layer_bands(int(n_layers), band_width),
                  "n_layers": int(n_layers), "kind": kind, "image_ids": list(ids), "store": str(path),
                  "computed_images": len(need)}
    return LocalizationResult(objects, images, provenance)


def accuracy_table(objects: "pd.DataFrame", by: str = "band", subset: str = "all", tolerance: float | None = None,
                   n_resamples: int = 1000, seed: int = 0) -> "pd.DataFrame":
    """Accuracy per ``by`` ("layer" or "band") and tolerance, with image-clustered bootstrap CIs, next to the mean
    chance rate and mean mass ratio. subset: "all" named objects present in the image, or "lost" (the paper's
    subset: lost under KO image->generated)."""
    import pandas as pd

    from vlmflow.stats import groupby_ci

    df = objects[objects["present"].astype(bool)]
    if subset == "lost":
        df = df[df["lost"].fillna(False).astype(bool)]
    elif subset != "all":
        raise LocalizationError(f"subset must be 'all' or 'lost', got {subset!r}")
    if tolerance is not None:
        df = df[df["tolerance"] == float(tolerance)]
    cols = [by, "tolerance", "accuracy", "accuracy_low", "accuracy_high", "chance", "mass_ratio", "n", "n_images"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(accuracy=df["hit"].astype(float))
    acc = groupby_ci(df, [by, "tolerance"], "accuracy", cluster="image_id", n_resamples=n_resamples, seed=seed)
    extra = df.groupby([by, "tolerance"], sort=True).agg(chance=("chance", "mean"),
                                                         mass_ratio=("mass_ratio", "mean")).reset_index()
    out = acc.merge(extra, on=[by, "tolerance"]).rename(columns={"n_clusters": "n_images"})
    if by == "band":  # numeric band order, not string order
        out = out.assign(_s=out["band"].str.split("-").str[0].astype(int)).sort_values(["tolerance", "_s"])
        out = out.drop(columns="_s")
    return out[cols].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------
# 5. heatmaps (arrays here; drawing in plot_heatmaps)

def attention_heatmap(gen: "Generation", geometry: "ImageGeometry", token: int, layer: int,
                      heads: str | Sequence[int] = "mean", row: str = "predicting",
                      block: int | str | None = None) -> np.ndarray:
    """float[H, W] in original pixels: generated token ``token``'s attention over the image tokens at decoder
    ``layer``, painted over each token's box. ``block``: a grid block (InternVL: ``"thumbnail"``, ``0``...); None =
    every block except a thumbnail painted together (each tile covers its own part of the image)."""
    rec = gen.record
    if rec is None:
        raise LocalizationError("the generation carries no attention record")
    pos = gen.prompt_length + token - (1 if row == "predicting" else 0)
    hit = (rec.row_positions == pos).nonzero().flatten()
    if not len(hit):
        raise LocalizationError(f"position {pos} (generated token {token}, row={row}) was not recorded")
    values = head_aggregate(rec.image_map, heads)[int(hit[0]), rec.layer(layer)]
    if block is not None:
        return geometry.heatmap(values, block=block)
    blocks = [i for i, b in enumerate(geometry.blocks) if b.name != "thumbnail"] or [0]
    out = None
    for b in blocks:
        h = geometry.heatmap(values, block=b)
        out = h if out is None else np.where(np.isnan(out), h, out)
    return out


def band_maps(image_row: dict, key: str, bands: Sequence[tuple[int, int]]) -> dict[str, np.ndarray]:
    """{"layers a-b": float[H, W]} for one stored mention (``key`` = "<object>#<occurrence>" of an image row kept by
    :func:`stored_localization` with maps): the naming token's attention averaged over each band's layers, painted
    over the image tokens' boxes in original pixels (every non-thumbnail block)."""
    if "maps" not in image_row or not isinstance(image_row["maps"], dict):
        raise LocalizationError(f"image {image_row.get('image_id')!r} was stored without maps (n_maps too small)")
    if key not in image_row["maps"]:
        raise LocalizationError(f"image {image_row.get('image_id')!r} has no stored map for {key!r}; "
                                f"stored: {sorted(image_row['maps'])}")
    geometry = geometry_from_dict(image_row["geometry_data"])
    values = np.asarray(image_row["maps"][key], dtype=float)  # [L, N]
    blocks = [i for i, b in enumerate(geometry.blocks) if b.name != "thumbnail"] or [0]
    out = {}
    for s, e in bands:
        v = values[s:e].mean(0)
        heat = None
        for b in blocks:
            h = geometry.heatmap(v, block=b)
            heat = h if heat is None else np.where(np.isnan(heat), h, heat)
        out[f"layers {s}-{e - 1}"] = heat
    return out


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


__all__ = ["DEFAULT_TOLERANCE_PX", "LocalizationError", "LocalizationResult", "MaskTokens", "Mention",
           "ObjectTruth", "accuracy_table", "attention_heatmap", "band_maps", "geometry_from_dict", "geometry_to_dict", "load_sample",
           "localize_image", "stored_localization", "band_label", "coco_mentions", "dataset_kind",
           "head_aggregate", "layer_bands", "localize_dataset", "localize_generation", "mass_inside", "mentions",
           "plot_heatmaps", "record_for", "toy_mentions", "token_spans", "truth_for"]
