"""The training study's measurements: one row per trained recipe (``toy/recipes.py``), each number with a bootstrap
interval over images, for the book's chapter "Which training grows it?" (``notebooks/recipe_study.ipynb``).

A row is the paper's analyses, computed by the library's own runners and deciders on the recipe's model:

- held-out quality (``toy.evaluate.item_rows`` on test scenes): description F1, yes/no, count and colour accuracy;
- Figure 1: the text group's share of attention (mean over layers) against its share of the visible keys, from the
  attention the baseline rows of the sweep record, and ``verdicts.decide_fig1``;
- Finding 1: F1 against the unmasked description with KO image→generated, image→text (free, and with the first
  token forced) and image→text+generated (the floor) in all layers (``presets.preset("from-layer", force_prefix=1)``,
  layer -1), and ``verdicts.decide_finding1``;
- Finding 2: the windows a quarter of the depth wide (``sweep_scores.window_configs``), the best one and where its
  centre sits, and ``verdicts.decide_finding2``;
- Finding 3: localization accuracy per layer band (``localize.stored_localization``), the peak band, and
  ``verdicts.decide_finding3``.

The four claims' intervals and verdicts come from ``vlmflow.claim_checks`` (the chapter "Across architectures"
computes its columns with the same functions). Sweeps and localizations go through the resumable stores (``stored_sweep``, ``stored_localization``), the quality
rows through ``store.cached_table``, so a rerun computes nothing it has. :func:`shows_mechanism` is the criterion,
fixed before any recipe was measured, that decides which recipe models are shipped.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from vlmflow.errors import VlmflowError

QUALITY_KINDS = ("describe", "exists", "count", "color")
# (column, label) of every interval in a row, in the chapter's order
METRICS: tuple[tuple[str, str], ...] = (
    ("describe_f1", "description F1"), ("exists_acc", "yes/no"), ("count_acc", "count"), ("color_acc", "colour"),
    ("text_attention", "text: attention share"), ("text_keys", "text: key share"),
    ("ko_gen", "KO img→gen"), ("ko_txt", "KO img→txt"), ("ko_txt_forced", "KO img→txt, forced"),
    ("ko_gen_forced", "KO img→gen, forced"), ("ko_floor", "KO img→txt+gen"),
    ("best_window_f1", "best quarter window"), ("peak_band_accuracy", "localization peak"),
)
SHIP_CRITERION = ("A recipe shows a paper mechanism when the library's own verdict on Finding 1 or on Finding 2 is "
                  "'reproduced' (vlmflow.verdicts: KO image→generated clearly above both KO image→text and the floor; "
                  "or a middle window a quarter of the depth wide keeps at least half of the description and is not "
                  "clearly below the best window). Its model is then shipped; otherwise the row is the finding.")


class RecipeStudyError(VlmflowError):
    """A study file or model that cannot be read as asked."""


def study_configs(n_layers: int) -> list:
    """Sweep configurations of one row: the recorded baseline, the three knockouts in all layers (free and first
    token forced) and the quarter-depth windows. Spec ids are those of the from-layer and window presets."""
    from vlmflow.presets import preset
    from vlmflow.sweep_scores import window_configs

    all_layers = [c for c in preset("from-layer", n_layers, force_prefix=1)
                  if not c.knockouts or dict(c.labels).get("layer") == -1]
    return all_layers + window_configs(n_layers, fractions=(0.25,))


def _quality(model: str, results: Path, *, n: int, seed: int, n_resamples: int, device: str, progress: bool) -> dict:
    import pandas as pd

    from vlmflow.claim_checks import flat_interval
    from vlmflow.stats import groupby_ci
    from vlmflow.store import cached_table, provenance

    def compute():
        from vlmflow.model import load
        from vlmflow.toy.evaluate import item_rows

        rows = item_rows(load(model, device=device, dtype="float32"), n=n, seed=seed, split="test", kinds=QUALITY_KINDS,
                         progress=progress)
        return pd.DataFrame(rows)[["scene", "kind", "correct", "f1"]]

    rows = cached_table(results / "quality.parquet", provenance(model, "toy-test", n=n, seed=seed, device=device, dtype="float32",
                                                                kinds=list(QUALITY_KINDS)), compute)
    rows["value"] = rows.f1.where(rows.kind == "describe", rows.correct.astype(float)).astype(float)
    out = {}
    for kind, name in zip(QUALITY_KINDS, ("describe_f1", "exists_acc", "count_acc", "color_acc")):
        sub = rows[rows.kind == kind]
        out |= flat_interval(groupby_ci(sub.assign(all=0), "all", "value", cluster="scene", n_resamples=n_resamples,
                              seed=seed), "value", name)
    return out


def _localization(model: str, results: Path, *, n_images: int, seed: int, n_resamples: int, device: str,
                  progress: bool):
    from vlmflow.claim_checks import finding3_check
    from vlmflow.localize import stored_localization

    loc = stored_localization(results, model=model, device=device, dtype="float32", data="toy-test",
                              n_images=n_images, seed=seed, judge="exact", n_maps=0, progress=progress)
    return finding3_check(loc, n_resamples=n_resamples, seed=seed)


def measure(model: str | os.PathLike, results_dir: str | os.PathLike, *, n_images: int = 80,
            quality_scenes: int = 100, seed: int = 0, n_resamples: int = 1000, device: str = "cpu",
            progress: bool = True) -> dict:
    """One row of the study for the toy model folder ``model``: every interval of :data:`METRICS` (``<name>``,
    ``<name>_low``, ``<name>_high``), where the best window and the localization peak sit, each claim's verdict
    (``verdict_<claim>``) and :func:`shows_mechanism`. Stores go under ``results_dir``."""
    from vlmflow.claim_checks import fig1_check, finding1_check, finding2_check
    from vlmflow.judge import get_judge
    from vlmflow.stats import CI
    from vlmflow.store import load_results
    from vlmflow.sweep_scores import score_rows, stored_sweep, truth_descriptions

    model = str(model)
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    rows, n_layers = stored_sweep(results, model=model, configs_for=study_configs, data="toy-test",
                                  n_images=n_images, seed=seed, device=device, dtype="float32", progress=progress)
    keys = sorted(rows.image.unique())
    scored = score_rows(rows, get_judge("exact"), truth=truth_descriptions("toy-test", keys, seed=seed),
                        cache_dir=results, progress=progress)
    row: dict = {"n_layers": int(n_layers), "n_images": len(keys)}
    row |= _quality(model, results, n=quality_scenes, seed=seed, n_resamples=n_resamples, device=device,
                    progress=progress)
    att, v_fig1 = fig1_check(load_results(rows.attrs["store"], "attention"), keys, n_resamples=n_resamples, seed=seed)
    ko, v_f1 = finding1_check(scored, n_resamples=n_resamples, seed=seed)
    windows, v_f2 = finding2_check(scored, n_layers, CI(ko["ko_floor"], ko["ko_floor_low"], ko["ko_floor_high"]),
                                   n_resamples=n_resamples, seed=seed)
    loc, v_f3 = _localization(model, results, n_images=n_images, seed=seed, n_resamples=n_resamples,
                              device=device, progress=progress)
    row |= att | ko | windows | loc
    for v in (v_fig1, v_f1, v_f2, v_f3):
        row[f"verdict_{v.claim}"] = v.outcome
        row[f"reason_{v.claim}"] = v.reason
    row["shows_mechanism"] = shows_mechanism(row)
    return row


MEASURE_DEFAULTS = {"n_images": 80, "quality_scenes": 100, "seed": 0, "n_resamples": 1000, "device": "cpu"}


def shows_mechanism(row: Mapping) -> bool:
    """:data:`SHIP_CRITERION` applied to a row."""
    from vlmflow.verdicts import REPRODUCED

    return row.get("verdict_finding1") == REPRODUCED or row.get("verdict_finding2") == REPRODUCED


def training_summary(model: str | os.PathLike) -> dict:
    """What a toy model's ``training.json`` says about its training: recipe, CPU budget, the clock its minutes count
    (``process`` CPU time for the recipes, ``wall`` time for the shipped model), steps, the minutes of each stage,
    and the last held-out (val) check during training."""
    path = Path(model) / "training.json"
    info = json.loads(path.read_text()) if path.is_file() else {}  # a model trained elsewhere: nothing recorded
    recipe = info.get("recipe") or {}
    prepared = info.get("prepared") or {}
    last = (info.get("history") or [{}])[-1]
    text = prepared.get("text_first") or {}
    cfg = info.get("train_config") or {}
    return {"recipe": recipe.get("name"), "cpu_budget_minutes": recipe.get("cpu_budget_minutes"),
            "planned_cpu_minutes": recipe.get("planned_cpu_minutes", recipe.get("cpu_budget_minutes")),
            "clock": cfg.get("clock", "wall"), "threads": cfg.get("threads"),
            "vision_minutes": cfg.get("vision_minutes"), "vision_from": prepared.get("vision_from"),
            "steps": info.get("steps"), "main_minutes": last.get("minutes"),
            "text_cpu_minutes": text.get("cpu_minutes", 0.0), "text_steps": text.get("steps", 0),
            "command": info.get("command"), "val_at_end": {k: last[k] for k in
                                                          ("describe_f1", "exists_acc", "count_acc", "color_acc")
                                                          if k in last}}


def study_rows(models: Mapping[str, str | os.PathLike], results_dir: str | os.PathLike, **kw) -> dict:
    """{recipe: {"provenance", "training", "row"}} for the recipe models ``models`` (name -> folder), measured with
    :func:`measure` (keyword arguments passed on) under ``results_dir/<name>``; the provenance is the result key
    (``store.provenance``: weights, data, settings, library versions)."""
    from vlmflow.store import provenance

    out = {}
    for name, folder in models.items():
        settings = {k: kw.get(k, MEASURE_DEFAULTS[k]) for k in MEASURE_DEFAULTS}
        out[name] = {"provenance": provenance(str(folder), "toy-test", **settings),
                     "training": training_summary(folder),
                     "row": measure(folder, Path(results_dir) / name, **kw)}
    return out


STUDY_FILE = Path("data") / "recipe_study" / "study.json"  # the stored rows the book reads (relative to the checkout)


def default_study_path() -> Path:
    """The checkout's stored study (``STUDY_FILE`` under the repository root, wherever the caller runs: a notebook's
    working folder is the book's root, not necessarily the checkout)."""
    return Path(__file__).resolve().parents[3] / STUDY_FILE


def write_study(path: str | os.PathLike, study: Mapping, *, update: bool = True) -> Path:
    """Write ``study`` ({recipe: {provenance, training, row}}) to ``path`` as JSON, atomically; with ``update`` the
    recipes already stored there and not in ``study`` are kept."""
    from vlmflow.atomic import atomic_write_json

    path = Path(path)
    recipes = {**(read_study(path) if update and path.is_file() else {}), **study}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, {"criterion": SHIP_CRITERION, "recipes": recipes}, indent=1, default=str)


def read_study(path: str | os.PathLike | None = None) -> dict:
    """The stored study's recipes ({recipe: {provenance, training, row}}) from ``path`` (None: the checkout's)."""
    path = Path(path) if path is not None else default_study_path()
    if not path.is_file():
        raise RecipeStudyError(f"no stored recipe study at {path}")
    return json.loads(path.read_text())["recipes"]


def table(study: Mapping) -> "pd.DataFrame":  # noqa: F821
    """The study as one flat row per recipe (training summary + measured row)."""
    import pandas as pd

    return pd.DataFrame([{"recipe": name, **{k: v for k, v in s["training"].items() if k not in ("recipe", "val_at_end")},
                          **s["row"]} for name, s in study.items()])


__all__ = ["METRICS", "SHIP_CRITERION", "RecipeStudyError", "measure", "read_study", "shows_mechanism",
           "study_configs", "study_rows", "table", "training_summary", "write_study"]
