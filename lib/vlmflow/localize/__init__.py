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
   (what a uniformly random peak scores); ``chance_area`` = the share of the image the dilated mask covers (pixel
   rule only). Uniform baseline of the map: ``mass_in`` = the attention mass on the
   object (each token weighted by the share of its box inside the mask), ``mask_share`` = what uniform attention
   over the image tokens would put there, ``mass_ratio`` = mass_in / mask_share (1 = no better than uniform).
6. **Aggregates** (:func:`accuracy_table`): accuracy per layer or layer band with bootstrap CIs over images
   (``vlmflow.stats.groupby_ci``), for all named objects and for the paper's subset (``lost=True``: objects in the
   unmasked description that the KO image->generated description loses, judged by the same judge).

Outputs are tidy pandas DataFrames (one row per mention x layer x tolerance). Heatmaps: :func:`attention_heatmap`
returns arrays, :func:`plot_heatmaps` draws them with ``vlmflow.figures.heatmap_overlay``.

Modules, one job each: ``mentions`` (naming tokens), ``masks`` (hit rules), ``score`` (one generation -> rows,
bands, accuracy tables), ``dataset`` (ground truth and the per-image / per-dataset loops), ``stored`` (the cached,
resumable runner), ``maps`` (heatmap arrays); drawing is ``vlmflow.figures_localize.plot_heatmaps``. Everything is
importable from ``vlmflow.localize``.
"""
from __future__ import annotations

from vlmflow.localize.base import DEFAULT_TOLERANCE_PX, DEFAULT_TOLERANCE_TOKENS, ROWS, LocalizationError
from vlmflow.localize.dataset import (
    OBJECT_COLUMNS,
    LocalizationResult,
    dataset_kind,
    load_sample,
    localize_dataset,
    localize_image,
    truth_for,
)
from vlmflow.localize.maps import attention_heatmap, band_maps, geometry_from_dict, geometry_to_dict
from vlmflow.localize.masks import MaskTokens, mass_inside
from vlmflow.localize.mentions import Mention, coco_mentions, mentions, token_spans, toy_mentions
from vlmflow.localize.score import (
    ObjectTruth,
    accuracy_table,
    band_label,
    head_aggregate,
    layer_bands,
    localize_generation,
    record_for,
)
from vlmflow.localize.stored import stored_localization


def plot_heatmaps(*args, **kwargs):
    """``vlmflow.figures_localize.plot_heatmaps`` (imported on use: matplotlib is not needed to compute)."""
    from vlmflow.figures_localize import plot_heatmaps as draw

    return draw(*args, **kwargs)


__all__ = ["DEFAULT_TOLERANCE_PX", "DEFAULT_TOLERANCE_TOKENS", "OBJECT_COLUMNS", "ROWS", "LocalizationError", "LocalizationResult", "MaskTokens", "Mention",
           "ObjectTruth", "accuracy_table", "attention_heatmap", "band_maps", "geometry_from_dict", "geometry_to_dict", "load_sample",
           "localize_image", "stored_localization", "band_label", "coco_mentions", "dataset_kind",
           "head_aggregate", "layer_bands", "localize_dataset", "localize_generation", "mass_inside", "mentions",
           "plot_heatmaps", "record_for", "toy_mentions", "token_spans", "truth_for"]
