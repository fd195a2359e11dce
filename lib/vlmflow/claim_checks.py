"""The paper's four mechanism claims decided on one model from its stored rows: the intervals each ``verdicts.decide_*``
function needs, computed once here for every page that compares models.

- :func:`fig1_check`: Figure 1's text group from the attention a sweep's baseline recorded (``load_results(store,
  "attention")``): per layer its attention share and observed/uniform ratio, the mean over layers and its share of
  the visible keys -> ``verdicts.decide_fig1``.
- :func:`finding1_check`: F1 against the unmasked description with KO image→generated, image→text (free and first
  token forced) and image→text+generated (the floor) in all layers (the from-layer preset's layer -1), from judged
  sweep rows (``sweep_scores.score_rows``) -> ``verdicts.decide_finding1``.
- :func:`finding2_check`: the windows of the width closest to a quarter of the depth (``sweep_scores.window_configs``
  rows) against that floor -> ``verdicts.decide_finding2``.
- :func:`finding3_check`: localization accuracy per layer band at the strictest tolerance (``localize.
  stored_localization``), on the objects lost under KO image→generated when there are at least
  :data:`MIN_LOST_OBJECTS`, else on all named objects -> ``verdicts.decide_finding3``.

Each returns ``(numbers, Verdict)``: ``numbers`` a flat dict of estimates and interval ends (``<name>``,
``<name>_low``, ``<name>_high``) for tables, the verdict's own ``numbers`` hold every interval it was decided on (for
figures). The intervals are 95% bootstrap intervals resampled by image (``stats.groupby_ci``), computed as the
finding pages compute them (Figure 1, Figure 2, the middle layers, Figure 7), so a model's verdict here and on those
pages rest on the same numbers. Used by the recipe study (``toy/recipe_study.py``, one row per trained recipe) and
the chapter "Across architectures" (one column per architecture).
"""
from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import numpy as np

from vlmflow.errors import VlmflowError
from vlmflow.stats import CI, groupby_ci
from vlmflow.verdicts import Verdict, _middle, decide_fig1, decide_finding1, decide_finding2, decide_finding3

MIN_LOST_OBJECTS = 20  # Figure 7's rule: the paper's subset (objects lost under KO image→generated) when this large
# (ko_type, name) of the all-layer knockouts in finding1_check's numbers; the floor has no forced twin there
KNOCKOUTS = (("img->gen", "ko_gen"), ("img->txt", "ko_txt"), ("img->txt+gen", "ko_floor"))


class ClaimCheckError(VlmflowError):
    """Rows that cannot decide a claim (no baseline attention, no all-layer knockout, no window...)."""


def flat_interval(table, value: str, name: str) -> dict[str, float]:
    """The first row of a ``stats.groupby_ci`` table as ``{name, name_low, name_high}`` (a row of a study table)."""
    r = table.iloc[0]
    return {name: float(r[value]), f"{name}_low": float(r[f"{value}_low"]), f"{name}_high": float(r[f"{value}_high"])}


def _interval(numbers: dict, name: str) -> CI:
    return CI(numbers[name], numbers[f"{name}_low"], numbers[f"{name}_high"])


def _overall(df, value: str, n_resamples: int, seed: int):
    return groupby_ci(df.assign(all=0).dropna(subset=[value]), "all", value, cluster="image",
                      n_resamples=n_resamples, seed=seed)


def _forced(rows):
    return rows.forced.fillna(False).astype(bool) if "forced" in rows else np.zeros(len(rows), dtype=bool)


def fig1_check(att, keys: Collection[str] | None = None, *, n_resamples: int = 1000,
               seed: int = 0) -> tuple[dict[str, Any], Verdict]:
    """Figure 1 from recorded attention rows (one per image, predicting position and layer, with ``mass_<role>`` and
    ``share_<role>`` columns), restricted to the images ``keys`` when given. Numbers: ``text_attention`` (the text
    group's attention share, mean over layers) and ``text_keys`` (its share of the visible keys)."""
    from vlmflow.roles import GROUPS

    if keys is not None:
        att = att[att.image.isin(set(keys))]
    if not len(att):
        raise ClaimCheckError("fig1_check: no recorded attention rows (did the sweep record its baseline?)")
    text = sorted(GROUPS["text"])
    t = att[["image", "position", "layer"]].assign(
        mass=att[[f"mass_{r}" for r in text]].sum(axis=1), share=att[[f"share_{r}" for r in text]].sum(axis=1))
    t["ratio"] = np.where(t.share > 0, t.mass / t.share.where(t.share > 0), np.nan)
    per_layer = {v: groupby_ci(t.dropna(subset=[v]), "layer", v, cluster="image", n_resamples=n_resamples, seed=seed)
                 for v in ("mass", "ratio")}
    # the mean over layers per prediction step, so each image's steps weigh as in the per-layer means
    steps = t.groupby(["image", "position"], as_index=False)[["mass", "share"]].mean()
    out = flat_interval(_overall(steps, "mass", n_resamples, seed), "mass", "text_attention")
    out |= flat_interval(_overall(steps, "share", n_resamples, seed), "share", "text_keys")
    mass = per_layer["mass"]
    ratio = per_layer["ratio"].set_index("layer").reindex(mass.layer)  # a layer whose text share is 0 has no ratio
    verdict = decide_fig1(mass.layer.tolist(), [CI(*r) for r in mass[["mass", "mass_low", "mass_high"]].to_numpy()],
                          [CI(*r) for r in ratio[["ratio", "ratio_low", "ratio_high"]].to_numpy()],
                          _interval(out, "text_keys"))
    return out, verdict


def finding1_check(scored, *, n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, Any], Verdict]:
    """Finding 1 from judged sweep rows holding the from-layer preset's all-layer knockouts (``layer`` -1, free and
    with the first token forced). Numbers: ``ko_gen``, ``ko_txt``, ``ko_floor`` (free) and ``ko_gen_forced``,
    ``ko_txt_forced``."""
    ko = scored[(scored.family == "from-layer") & (scored.layer == -1)]
    forced = _forced(ko)
    out: dict[str, Any] = {}
    for ko_type, name in KNOCKOUTS:
        for is_forced, key in ((False, name), (True, f"{name}_forced"))[:1 if name == "ko_floor" else 2]:
            rows = ko[(ko.ko_type == ko_type) & (forced == is_forced)]
            if len(rows.dropna(subset=["f1_baseline"])):
                out |= flat_interval(_overall(rows, "f1_baseline", n_resamples, seed), "f1_baseline", key)
    missing = [n for _, n in KNOCKOUTS if n not in out]
    if missing:
        raise ClaimCheckError(f"finding1_check: no judged all-layer (layer -1) rows for {', '.join(missing)}; sweep "
                              f"the from-layer preset")
    verdict = decide_finding1(_interval(out, "ko_gen"), _interval(out, "ko_txt"), _interval(out, "ko_floor"),
                              _interval(out, "ko_txt_forced") if "ko_txt_forced" in out else None)
    return out, verdict


def quarter_width(n_layers: int, widths: Collection[int] | None = None) -> int:
    """The window width Finding 2 is decided on: a quarter of the decoder layers (at least 1), or the width in
    ``widths`` closest to it."""
    quarter = max(1, round(int(n_layers) / 4))
    return min(sorted(widths), key=lambda w: abs(int(w) - quarter)) if widths else quarter


def finding2_check(scored, n_layers: int, floor: CI, *, n_resamples: int = 1000,
                   seed: int = 0) -> tuple[dict[str, Any], Verdict]:
    """Finding 2 from judged window rows (family ``window``: the image visible only inside [window_start,
    window_end]) of the width closest to a quarter of the depth, against ``floor`` (no image in any layer). Numbers:
    ``best_window`` ("a-b"), its relative depth, whether it is middle, and its F1 interval ``best_window_f1``."""
    win = scored[(scored.family == "window") & ~_forced(scored)]
    if not len(win.dropna(subset=["f1_baseline"])):
        raise ClaimCheckError("finding2_check: no judged window rows; sweep sweep_scores.window_configs")
    width = quarter_width(n_layers, {int(w) for w in win.width.dropna()})
    win = win[win.width == width]
    t = groupby_ci(win.dropna(subset=["f1_baseline"]), ["window_start", "window_end"], "f1_baseline", cluster="image",
                   n_resamples=n_resamples, seed=seed)
    windows = [(int(r.window_start), int(r.window_end), CI(r.f1_baseline, r.f1_baseline_low, r.f1_baseline_high))
               for r in t.itertuples()]
    best = max(windows, key=lambda w: w[2].estimate)
    centre = (best[0] + best[1]) / 2
    out = {"best_window": f"{best[0]}-{best[1]}", "best_window_depth": (centre + 0.5) / n_layers,
           "best_window_middle": bool(_middle(centre, n_layers)), "best_window_f1": best[2].estimate,
           "best_window_f1_low": best[2].low, "best_window_f1_high": best[2].high}
    return out, decide_finding2(windows, floor, n_layers)


def finding3_check(loc, *, n_resamples: int = 1000, seed: int = 0) -> tuple[dict[str, Any], Verdict]:
    """Finding 3 (Figure 7) from a ``localize.LocalizationResult``: band accuracy at the strictest tolerance on the
    paper's subset (objects lost under KO image→generated) when it holds at least :data:`MIN_LOST_OBJECTS`, else on
    all named objects in their image. Numbers: ``peak_band``, whether it is middle, its accuracy interval
    ``peak_band_accuracy`` and chance rate, and ``localization_subset``."""
    prov = loc.provenance
    objs = loc.objects[loc.objects.present.astype(bool)].drop_duplicates(["image_id", "object", "occurrence"])
    n_lost = int(objs.lost.fillna(False).astype(bool).sum())
    subset = "lost" if n_lost >= MIN_LOST_OBJECTS else "all"
    tol0 = min(prov["tolerances"])
    table = loc.accuracy("band", subset, n_resamples=n_resamples, seed=seed)
    table = table[table.tolerance == tol0].set_index("band")
    bands = [(s, e, CI(*table.loc[f"{s}-{e - 1}", ["accuracy", "accuracy_low", "accuracy_high"]]),
              table.loc[f"{s}-{e - 1}", "chance"]) for s, e in prov["bands"] if f"{s}-{e - 1}" in table.index]
    verdict = decide_finding3(bands, n_layers=prov["n_layers"],
                              subset=f"{n_lost} objects lost under KO image→generated" if subset == "lost"
                              else f"all {len(objs)} named objects")
    scored = [b for b in bands if not math.isnan(b[2].estimate)]
    if not scored:
        return {"peak_band": None, "localization_subset": subset}, verdict
    s, e, acc, chance = max(scored, key=lambda b: b[2].estimate)
    return {"peak_band": f"{s}-{e - 1}", "peak_band_middle": bool(_middle((s + e - 1) / 2, prov["n_layers"])),
            "peak_band_accuracy": acc.estimate, "peak_band_accuracy_low": acc.low,
            "peak_band_accuracy_high": acc.high, "peak_band_chance": float(chance),
            "localization_subset": subset}, verdict


__all__ = ["KNOCKOUTS", "MIN_LOST_OBJECTS", "ClaimCheckError", "fig1_check", "finding1_check", "finding2_check",
           "finding3_check", "flat_interval", "quarter_width"]
