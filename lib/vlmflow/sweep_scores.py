"""Knockout sweeps as the figure notebooks use them: run what is missing into a result store, then judge every row.

Where it sits: the sweep engine (``vlmflow.sweep``) computes generations for preset configurations
(``vlmflow.presets``) into a resumable result folder (``vlmflow.store``); the judges (``vlmflow.judge``) turn a
(reference, candidate) description pair into precision / recall / F1. The knockout notebooks (Figure 2, the middle
layers) need the same three steps, so they live here instead of in every notebook:

- :func:`stored_sweep` opens (or creates) the result folder named by the settings hash, computes only the
  (image, configuration) keys it lacks, loading the model only when something is missing, and returns the rows;
- :func:`window_configs` / :func:`full_knockout_config`: the middle-layer windows on a grid of widths, and the
  image hidden everywhere (the floor of the window and top-K curves);
- :func:`truth_descriptions` gives a ground-truth reference per sweep image (the toy scene's canonical description,
  or the list of COCO categories annotated in the image);
- :func:`score_rows` judges every row against its image's unmasked (baseline) description and, when given, against
  the ground truth, with a judgment cache in the results folder keyed by the judge's provenance and the two texts
  (an LLM judge is paid once per distinct pair, and a rerun judges nothing).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.judge import Judge
    from vlmflow.sweep import SweepConfig, SweepImage

BASELINE_SPEC = "none"  # spec id of the configuration with no knockout and no forcing (SweepConfig().spec_id)
SCORE_FIELDS = ("precision", "recall", "f1")


class SweepScoreError(VlmflowError):
    """A sweep result table cannot be scored as asked (no baseline row for an image, unknown data...)."""


def stored_sweep(folder: str | Path, *, model: str, configs_for: Callable[[int], Sequence["SweepConfig"]],
                 data: str = "toy-test", n_images: int | None = None, seed: int = 0, device: str = "cpu",
                 dtype: str | None = None, question: str = "describe the image", max_new_tokens: int = 64,
                 batch_size: int = 32, progress: bool = True, extra_settings: Mapping[str, Any] | None = None,
                 ) -> tuple["pd.DataFrame", int]:
    """Run ``configs_for(n_layers)`` on the first ``n_images`` of ``data`` into the stored sweep of these settings
    under ``folder``; -> (the result rows of exactly these images and configurations, n_layers).

    The one sweep path (``vlmflow.sweep_run.stored_sweep_rows``, the CLI's key): the results live in
    ``folder/sweep-<settings hash>``, or in ``folder`` itself when it is a ``vlmflow sweep --out`` folder of the same
    key; ``extra_settings`` join the key. A rerun whose keys are all stored does not load the model at all.
    """
    from vlmflow.sweep_run import stored_sweep_rows

    rows = stored_sweep_rows(folder, configs_for, model=model, data=data, n_images=n_images, seed=seed, device=device,
                             dtype=dtype, question=question, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             progress=progress, extra_settings=extra_settings)
    return rows, rows.attrs["n_layers"]


def window_configs(n_layers: int, fractions: Sequence[float] = (0.125, 0.25, 0.5, 0.75),
                   stride: int | None = None) -> list["SweepConfig"]:
    """The middle-layer experiment on a finer grid than the ``window`` preset: the image visible to text and generated
    tokens only inside [a, b], for widths ``round(f * n_layers)`` (at least 1, below n_layers: a window of every layer
    is the baseline) and starts a = 0, stride, ... (default stride ``max(1, L // 16)``; the last window always ends at
    the last layer). Configurations, labels and spec ids are those of ``vlmflow.presets.window`` for the widths both
    have, so the two share stored results. No baseline (add it from a preset)."""
    from vlmflow.knockout import Knockout
    from vlmflow.sweep import SweepConfig

    if n_layers < 2:
        raise SweepScoreError(f"window_configs: a window narrower than the model needs at least 2 decoder layers, "
                              f"got {n_layers}")
    stride = max(1, n_layers // 16) if stride is None else int(stride)
    if stride < 1:
        raise SweepScoreError(f"window_configs: stride must be >= 1, got {stride}")
    widths = sorted({min(n_layers - 1, max(1, round(n_layers * f))) for f in fractions})
    out = []
    for width in widths:
        starts = list(range(0, n_layers - width + 1, stride))
        if starts[-1] != n_layers - width:
            starts.append(n_layers - width)
        for a in starts:
            b = a + width - 1
            ko = Knockout.outside_window("image", ("text", "generated"), a, b, n_layers)
            out.append(SweepConfig((ko,), labels=(("family", "window"), ("ko_type", "img->txt+gen"),
                                                  ("window_start", a), ("window_end", b), ("width", width))))
    return out


def full_knockout_config() -> "SweepConfig":
    """The image hidden from text and generated tokens in every layer (no image at all: the floor of the window and
    top-K curves, K = 0)."""
    from vlmflow.knockout import Knockout
    from vlmflow.sweep import SweepConfig

    return SweepConfig((Knockout("image", ("text", "generated")),),
                       labels=(("family", "full-ko"), ("ko_type", "img->txt+gen"), ("k_percent", 0.0)))


def truth_descriptions(data: str, images: Sequence["SweepImage"] | Sequence[str], seed: int = 0) -> dict[str, str]:
    """Ground-truth reference text per sweep image key: for ``toy-test`` the scene's canonical description (exact
    triples, read by the exact judge); for COCO data the annotated categories joined by commas (what the lexical and
    LLM judges read as an object list). Keys are those of ``vlmflow.sweep.sweep_images``."""
    keys = [im if isinstance(im, str) else im.key for im in images]
    if data == "toy-test":
        from vlmflow.toy.scenes import make_scene

        out = {}
        for key in keys:
            if not key.startswith("toy-test-"):
                raise SweepScoreError(f"image key {key!r} is not a toy-test key (toy-test-NNNNN)")
            out[key] = make_scene(seed, "test", int(key.rsplit("-", 1)[1])).description
        return out
    import os

    from vlmflow.data.coco import CocoSample, coco_sample

    if data == "coco-sample":
        sample = coco_sample(progress=False)
    elif os.path.isfile(data) and data.endswith(".json"):
        sample = CocoSample.from_folder(os.path.dirname(os.path.abspath(data)), instances=os.path.basename(data))
    elif os.path.isdir(data):
        sample = CocoSample.from_folder(data)
    else:
        raise SweepScoreError(f"no ground truth for data {data!r}: expected toy-test, coco-sample or a COCO folder")
    return {key: ", ".join(sorted(sample.objects(int(key)))) for key in keys}


def judge_key(judge: "Judge") -> str:
    """Identity of a judge's decisions (its provenance: name, version, model, endpoint...), 12 hex digits."""
    text = json.dumps(judge.provenance(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def judge_pairs(judge: "Judge", pairs: Sequence[tuple[str, str]], cache_dir: str | Path | None = None,
                progress: bool = True) -> "pd.DataFrame":
    """Judge (reference, candidate) pairs -> a DataFrame in input order with ``precision``, ``recall``, ``f1``,
    ``tp``, ``fp``, ``fn`` (counts) and ``failed``. Distinct pairs are judged once; with ``cache_dir``, judgments
    are kept in ``cache_dir/judgments-<judge key>.parquet`` and a later call judges only pairs not stored there."""
    import pandas as pd

    cols = ["reference", "candidate", *SCORE_FIELDS, "tp", "fp", "fn", "failed"]
    cache_file = Path(cache_dir) / f"judgments-{judge_key(judge)}.parquet" if cache_dir is not None else None
    stored = pd.read_parquet(cache_file) if cache_file is not None and cache_file.is_file() else pd.DataFrame(
        columns=cols)
    known = {(r, c) for r, c in zip(stored.reference, stored.candidate)}
    todo = sorted({(r, c) for r, c in pairs} - known)
    if todo:
        judged = judge.judge_many(todo, progress=progress)
        fresh = pd.DataFrame([{"reference": r, "candidate": c, "precision": j.precision, "recall": j.recall,
                               "f1": j.f1, "tp": len(j.tp), "fp": len(j.fp), "fn": len(j.fn), "failed": j.failed}
                              for (r, c), j in zip(todo, judged)], columns=cols)
        stored = fresh if stored.empty else pd.concat([stored, fresh], ignore_index=True)
        if cache_file is not None:
            from vlmflow.atomic import atomic_write

            atomic_write(cache_file, lambda f: stored.to_parquet(f, index=False))
    table = stored.set_index(["reference", "candidate"])
    out = table.loc[list(pairs)].reset_index() if len(pairs) else pd.DataFrame(columns=cols)
    for name in SCORE_FIELDS:
        out[name] = out[name].astype(float)
    return out


def score_rows(rows: "pd.DataFrame", judge: "Judge", *, truth: Mapping[str, str] | None = None,
               cache_dir: str | Path | None = None, progress: bool = True) -> "pd.DataFrame":
    """Score every sweep row (``image``, ``spec_id``, ``text``) with ``judge``.

    Adds ``f1_baseline`` / ``precision_baseline`` / ``recall_baseline`` / ``failed_baseline`` (the row's text against
    the unmasked description of its image: the paper's protocol) and, with ``truth`` (image key -> reference text),
    the same with the suffix ``_truth`` (against ground truth). Failed judgments leave NaN scores and their reason.
    Raises SweepScoreError naming an image that has no baseline row.
    """
    out = rows.copy()
    base = out[out.spec_id == BASELINE_SPEC].drop_duplicates("image").set_index("image").text
    lacking = sorted(set(out.image) - set(base.index))
    if lacking:
        raise SweepScoreError(f"no baseline ('{BASELINE_SPEC}') row for images {lacking[:5]}: the sweep must include "
                              f"the unmasked configuration")
    references = {"baseline": out.image.map(base)}
    if truth is not None:
        missing = sorted(set(out.image) - set(truth))
        if missing:
            raise SweepScoreError(f"no ground truth for images {missing[:5]}")
        references["truth"] = out.image.map(dict(truth))
    for name, ref in references.items():
        judged = judge_pairs(judge, list(zip(ref.tolist(), out.text.tolist())), cache_dir, progress)
        for field in (*SCORE_FIELDS, "failed"):
            out[f"{field}_{name}"] = judged[field].to_numpy()
    return out


__all__ = ["BASELINE_SPEC", "SweepScoreError", "full_knockout_config", "judge_key", "judge_pairs", "score_rows",
           "stored_sweep", "truth_descriptions", "window_configs"]
