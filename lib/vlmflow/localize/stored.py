"""Localization through a result store (``vlmflow.store``): one part per image, so a rerun computes only the images
it lacks and never loads the model when none is missing (Figures 6-7 and ``vlmflow localize`` read it)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.localize.base import DEFAULT_TOLERANCE_PX
from vlmflow.localize.dataset import OBJECT_COLUMNS, LocalizationResult, dataset_kind, localize_image
from vlmflow.localize.score import layer_bands

if TYPE_CHECKING:
    import pandas as pd


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def stored_localization(folder, *, model: str = "toy", device: str = "cpu", dtype: str | None = None,
                        data: str = "toy-test", n_images: int | None = 20, seed: int = 0, judge: str | None = None,
                        judge_options: dict | None = None, n_maps: int = 0, question: str = "describe the image",
                        max_new_tokens: int = 64, tolerances: Sequence[float] | None = None,
                        heads: str | Sequence[int] = "mean", row: str = "predicting", instances: str = "any",
                        toy_match: str = "exact", band_width: int | None = None, knockout: bool = True,
                        exact: bool = False, progress: bool = True) -> LocalizationResult:
    """:func:`localize_dataset` through the one experiment path (``vlmflow.runner.Experiment``, kind ``localize``):
    one part per image (its object rows and image row as JSON), so a rerun computes only the images it lacks and does
    not load the model when none is missing. The first ``n_maps`` images also keep their attention maps
    (``images.maps`` / ``images.geometry_data``, for Figure 6). ``judge``: default exact for toy scenes, lexical for
    COCO; ``knockout``: also describe under KO image->generated to mark lost objects; ``exact``: ``folder`` is the
    result folder itself (``vlmflow localize --out``), else the results root. The result's ``provenance`` has
    ``store`` and ``computed_images``."""
    import json

    from vlmflow.data.resolver import TOY_SPLITS, resolve
    from vlmflow.judge import get_judge
    from vlmflow.runner import Experiment, dtype_key, progress_bar
    from vlmflow.store import provenance

    resolved = resolve(data, n_images, seed)  # data_id: a user's folder by content (vlmflow.data.resolver)
    sample = resolved.coco(Path(folder) / "scenes" if exact else folder)
    kind = dataset_kind(sample)
    unit = "tokens" if kind == "toy" else "px"
    if tolerances is None:
        tolerances = (0, 1) if unit == "tokens" else (0, 20, DEFAULT_TOLERANCE_PX, 80)
    the_judge = get_judge(judge or ("exact" if kind == "toy" else "lexical"), **(judge_options or {}))
    ids = sample.image_ids[:n_images]
    settings = provenance(
        model, resolved.data_id, seed=seed,
        scenes=sample.root.name if data in TOY_SPLITS else None,  # the scene settings (load_sample)
        question=question, max_new_tokens=int(max_new_tokens), device=device, dtype=dtype_key(dtype),
        tolerances=[float(t) for t in tolerances], unit=unit, heads=heads if isinstance(heads, str) else list(heads),
        row=row, instances=instances, toy_match=toy_match, band_width=band_width, judge=the_judge.provenance(),
        **({} if knockout else {"knockout": False}))  # absent when on: the keys stored before the option stay valid
    exp = Experiment(folder, settings, kind="localize", model=model, device=device, dtype=dtype, exact=exact,
                     provenance={"kind": kind})
    n_layers = exp.n_layers
    need = exp.missing((key_id, key_id[0], ["maps" if k < n_maps else "rows"])
                       for k, key_id in enumerate((str(i), i) for i in ids))
    if need:
        bands = layer_bands(n_layers, band_width)
        for (key, image_id), (spec,) in progress_bar(need, "localize", progress):
            rows, image_row = localize_image(exp.vlm, sample, image_id, kind=kind, question=question,
                                             max_new_tokens=max_new_tokens, tolerances=tolerances, unit=unit,
                                             heads=heads, row=row, instances=instances, knockout=knockout,
                                             judge=the_judge, bands=bands, toy_match=toy_match,
                                             keep_maps=spec == "maps")
            exp.store.write_part(key, [{"image": key, "spec_id": spec,
                                        "objects": json.dumps(rows, default=_json_default),
                                        "image_row": json.dumps(image_row, default=_json_default)}])
    path = exp.folder
    objects, images = _read_stored(path, ids)
    stored = {**exp.settings, "bands": layer_bands(int(n_layers), band_width),
              "n_layers": int(n_layers), "kind": kind, "image_ids": list(ids), "store": str(path),
              "computed_images": len(need)}
    return LocalizationResult(objects, images, stored)


def _read_stored(path, ids) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """(object rows, image rows in the order of ``ids``) of the images ``ids`` from the store at ``path``."""
    import json

    import pandas as pd

    from vlmflow.store import load_results

    want = [str(i) for i in ids]
    stored = load_results(path)
    stored = stored[stored.image.isin(want)]
    # an image stored with maps also serves a run that needs none
    stored = stored.sort_values("spec_id").drop_duplicates("image", keep="first")
    objects = pd.DataFrame([r for text in stored.objects for r in json.loads(text)], columns=OBJECT_COLUMNS)
    images = pd.DataFrame([json.loads(text) for text in stored.image_row])
    order = {i: k for k, i in enumerate(ids)}
    return objects, images.sort_values("image_id", key=lambda c: c.map(order)).reset_index(drop=True)
