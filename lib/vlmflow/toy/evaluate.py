"""Evaluate a toy model on held-out toy scenes (``vlmflow toy eval``); the numbers go into the model card.

Metrics (greedy generation through the core library, ``vlmflow.VLM.generate``): description object F1 against
ground truth (exact size-colour-shape triple, mean of per-image F1, and pooled), yes/no accuracy on the balanced
MME-style pairs, counting accuracy (``how many objects ?``), colour accuracy and position accuracy.
``knockout=True`` repeats them under the paper's full knockout, ``vf.Knockout("image", ("text", "generated"))`` in
every layer, through the one registered attention function (``vlmflow.attention``): the image is hidden from every
text and generated token.

:func:`item_rows` answers every question once (one row each: figures bootstrap over them); :func:`evaluate` reduces
the rows to the model card's averages; :func:`quick_eval` wraps a model under training for the training log.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmflow.toy.clips import FACT_FAMILIES
from vlmflow.toy.questions import DESCRIBE_PROMPT, color_questions, count_questions, exists_pair, position_questions
from vlmflow.toy.scenes import SceneConfig, make_scene

KINDS = ("describe", "exists", "count", "color", "position")


@dataclass
class _Item:
    kind: str
    image: object
    question: str
    answer: str
    objects: list | None = None
    scene: int = -1  # index of the scene in its split (the cluster of bootstrap CIs)
    n_objects: int = 0  # objects in the scene
    negative: str | None = None  # exists "no" questions: the hard-negative rule (questions.exists_pair)


def _items(n: int, seed: int, split: str, scene_config: SceneConfig) -> list[_Item]:
    items: list[_Item] = []
    for i in range(n):
        sc = make_scene(seed, split, i, scene_config)
        rng = np.random.default_rng(np.random.SeedSequence([*sc.seed, 7]))
        n_objects = len(sc.objects)
        items.append(_Item("describe", sc.image, DESCRIBE_PROMPT, sc.description, sc.toy_objects, scene=i,
                           n_objects=n_objects))
        if sc.objects:
            for qa in exists_pair(sc, rng):
                items.append(_Item("exists", sc.image, qa.question, qa.answer, scene=i, n_objects=n_objects,
                                   negative=qa.negative))
        qa = count_questions(sc)[0]  # how many objects ?
        items.append(_Item("count", sc.image, qa.question, qa.answer, scene=i, n_objects=n_objects))
        for kind, pool in (("color", color_questions(sc)), ("position", position_questions(sc))):
            if pool:
                qa = pool[int(rng.integers(len(pool)))]
                items.append(_Item(kind, sc.image, qa.question, qa.answer, scene=i, n_objects=n_objects))
    return items


def evaluate(vlm, *, n: int = 200, seed: int = 0, split: str = "test", scene_config: SceneConfig = SceneConfig(),
             knockout: bool = False, batch_size: int = 32, kinds: tuple[str, ...] = KINDS,
             progress: bool = False) -> dict:
    """Metrics dict of a ``vlmflow.VLM``: describe_f1 (mean per image), describe_f1_pooled, exists_acc, count_acc,
    color_acc, position_acc, and n per kind (only the ``kinds`` asked for), from :func:`item_rows`."""
    rows = item_rows(vlm, n=n, seed=seed, split=split, knockout=knockout, kinds=kinds, scene_config=scene_config,
                     batch_size=batch_size, progress=progress)
    return metrics_of(rows, n_scenes=n)


# The yes/no pair split by what the "no" question swapped (``questions.exists_pair``'s rule; None = the "yes"
# question): a model that checks only one attribute is right on every "yes" and wrong on the negatives that share
# that attribute with an object of the scene (the toy InternVL answered by colour alone: none of the shape swaps right).
EXISTS_QUESTIONS = {"yes": None, "no_color": "color", "no_shape": "shape", "no_random": "random"}


def metrics_of(rows: list[dict], n_scenes: int) -> dict:
    """The model card's averages of :func:`item_rows`' rows; exists also split by question (``EXISTS_QUESTIONS``),
    colour also on scenes with two or more objects (``color_multi_acc``)."""
    res: dict = {}
    described = [r for r in rows if r["kind"] == "describe"]
    if described:
        tp, fp, fn = (sum(r[k] for r in described) for k in ("n_matched", "n_extra", "n_missed"))
        res["describe_f1"] = round(float(np.mean([r["f1"] for r in described])), 4)
        res["describe_f1_pooled"] = round(2 * tp / max(1, 2 * tp + fp + fn), 4)
    for kind in KINDS[1:]:
        correct = [r["correct"] for r in rows if r["kind"] == kind]
        if correct:
            res[f"{kind}_acc"] = round(float(np.mean(correct)), 4)
            res[f"{kind}_n"] = len(correct)
    for question, rule in EXISTS_QUESTIONS.items():
        correct = [r["correct"] for r in rows if r["kind"] == "exists" and r.get("negative", "-") == rule]
        if correct:
            res[f"exists_{question}_acc"] = round(float(np.mean(correct)), 4)
    # colour in scenes of 2+ objects: the question must find its object (one object needs no lookup)
    correct = [r["correct"] for r in rows if r["kind"] == "color" and r.get("n_objects", 0) >= 2]
    if correct:
        res["color_multi_acc"] = round(float(np.mean(correct)), 4)
        res["color_multi_n"] = len(correct)
    res["n_scenes"] = n_scenes
    return res


# The card's bar metrics get a 95% percentile-bootstrap interval over scenes (``stats.bootstrap_ci``; the two yes/no
# questions of a scene resample together): 100 test scenes leave a few points of noise, and a bar met or missed by
# less than that is not decided by the sample.
BAR_CONFIDENCE = 0.95
BAR_RESAMPLES = 1000
_LEVEL = f"{BAR_CONFIDENCE:.0%}"  # "95%", as the card and status lines name the interval


def bar_intervals(rows: list[dict]) -> dict[str, list[float]]:
    """{metric: [low, high]}: the ``BAR_CONFIDENCE`` bootstrap interval over scenes of each metric in ``TARGETS``
    (and ``position_acc``) that :func:`item_rows`' ``rows`` have, from the same rows as :func:`metrics_of`."""
    from vlmflow.stats import bootstrap_ci

    out = {}
    for metric in (*TARGETS, "position_acc"):
        kind, value = ("describe", "f1") if metric == "describe_f1" else (metric[:-4], "correct")
        records = [{"scene": r["scene"], "value": float(r[value])} for r in rows if r["kind"] == kind]
        if records:
            ci = bootstrap_ci(records, value="value", cluster="scene", confidence=BAR_CONFIDENCE,
                              n_resamples=BAR_RESAMPLES)
            out[metric] = [round(ci.low, 4), round(ci.high, 4)]
    return out


def quick_eval(model, processor, *, n: int = 48, seed: int = 0, split: str = "val",
               scene_config: SceneConfig = SceneConfig(), plant=None) -> dict:
    """Cheap held-out check of a model under training (the training log), under ``plant`` (a
    ``vlmflow.plant.Plant``, as the model will run once shipped); leaves it in eval mode."""
    from vlmflow.model import wrap

    return evaluate(wrap(model, processor, name="toy (training)", plant=plant), n=n, seed=seed, split=split,
                    scene_config=scene_config)


# What a model that ignores the image can reach at best on the default scenes (1-4 objects): the knockout rows of
# the model card are compared with these. describe: a fixed guess of one object matches with probability ~1/60.
CHANCE = {"describe_f1": 0.0, "exists_acc": 0.5, "count_acc": 0.25, "color_acc": 1 / 6, "position_acc": 1 / 9}


# The quality targets on the test split, and the knockout bound: with the image hidden, an accuracy must not
# exceed chance by more than two binomial standard errors (describe F1: a blind guess scores ~0.02; bound 0.05).
TARGETS = {"describe_f1": 0.9, "exists_acc": 0.9, "count_acc": 0.9, "color_acc": 0.9}
# A planted model (``vlmflow.plant``) answers through the route the plant leaves it: its bars are 0.85 each.
PLANTED_TARGETS = {k: 0.85 for k in TARGETS}
# The toy InternVL and Qwen2-VL (``toy/architectures.py``) are held to the bars set for them when they were added:
# 0.85 each, and for a toy with a video input a held-out clip description fact F1 of 0.8.
ARCHITECTURE_TARGETS = {k: 0.85 for k in TARGETS}
CLIP_TARGETS = {"describe_video_f1": 0.8}
BLIND_DESCRIBE_F1_BOUND = 0.05


def targets_for(architecture: str, planted: bool) -> dict[str, float]:
    """The quality bars of a toy: the LLaVA toy's, a planted model's, or another architecture's (adapter name)."""
    if planted:
        return PLANTED_TARGETS
    return TARGETS if architecture == "llava" else ARCHITECTURE_TARGETS


def target_status(results: dict) -> list[dict]:
    """One row per check of ``evaluate_all``'s results: each plain metric against its target, and each knockout
    metric against its chance bound. Rows: check, metric, value, bound, met, interval (``[low, high]`` from
    ``bar_intervals`` / ``clip_eval``, None for an evaluation stored without one)."""
    m = results["metrics"]
    targets = results.get("targets", TARGETS)
    intervals = results.get("intervals", {})  # absent from an evaluation stored before intervals were recorded
    rows = [{"check": "plain >= target", "metric": k, "value": m["plain"][k], "bound": t,
             "met": m["plain"][k] >= t, "interval": intervals.get("plain", {}).get(k)}
            for k, t in targets.items() if k in m["plain"]]
    clips = results.get("clips", {})
    rows += [{"check": "clips >= target", "metric": k, "value": clips[k], "bound": t, "met": clips[k] >= t,
              "interval": clips.get(f"{k}_interval")} for k, t in CLIP_TARGETS.items() if k in clips]
    ko = m.get("full_knockout", {})
    for k in TARGETS:
        if k not in ko:
            continue
        if k == "describe_f1":
            bound = BLIND_DESCRIBE_F1_BOUND
        else:
            c, n = results["chance"][k], max(1, ko[k[:-4] + "_n"])
            bound = c + 2 * math.sqrt(c * (1 - c) / n)
        rows.append({"check": "knockout <= chance", "metric": k, "value": ko[k], "bound": round(bound, 4),
                     "met": ko[k] <= bound, "interval": intervals.get("full_knockout", {}).get(k)})
    return rows


def undecided(status: list[dict]) -> list[dict]:
    """The quality-target rows of :func:`target_status` whose bound lies inside the metric's interval: met or missed,
    the sample does not tell which side of the bar the model is on. (A knockout bound already adds two standard
    errors to chance, so its rows are not asked again.)"""
    return [r for r in status if r.get("interval") and not r["check"].startswith("knockout")
            and r["interval"][0] <= r["bound"] <= r["interval"][1]]


def stored_status(folder: str | os.PathLike) -> list[dict] | None:
    """:func:`target_status` of the evaluation stored in model ``folder`` (its ``eval.json``, which ``vlmflow toy
    eval --card`` writes); None for a folder never evaluated."""
    import json

    path = Path(folder) / "eval.json"
    return target_status(json.loads(path.read_text())) if path.is_file() else None


def _model_folder(name_or_path: str) -> Path:
    """The folder of a toy model by name ("toy", "toy:NAME"), else ``name_or_path`` as a path (a hub id gives a
    path that is not there)."""
    from vlmflow.model import is_toy_name, toy_model_folder

    return toy_model_folder(name_or_path) if is_toy_name(name_or_path) else Path(name_or_path)


def model_status(name_or_path: str) -> list[dict] | None:
    """:func:`stored_status` of a toy model by name ("toy", "toy:NAME") or of a local folder; None for a hub id or a
    folder never evaluated (the toy world's bars do not apply to a real checkpoint)."""
    folder = _model_folder(name_or_path)
    return stored_status(folder) if folder.is_dir() else None


# What a run may add to the LLaVA toy's recipe (TrainConfig fields recorded in training.json's ``train_config``), each
# with the phrase its value gives (None: not used). The LLaVA toy needed none of them.
TRAINING_AIDS = (
    ("fixed_words", lambda v: f"fixed readout rows ({', '.join(v)})" if v else None),
    ("probe_scale", lambda v: f"token probe at a fixed scale of {v:g}" if v else None),
    ("probe_position", lambda v: "token probe naming each object's row and column" if v else None),
    ("exists_negatives", lambda v: f"yes/no negatives drawn by rule {v}" if v else None),
    ("probe_question", lambda v: f"question probe at layer {v}" if v is not None else None),
    ("probe_events", lambda v: f"event probe at layer {v}" if v is not None else None),
    ("event_attributes", lambda v: "event attribute heads" if v else None),
    ("event_places", lambda v: "event place heads" if v else None),
)


def training_aids(name_or_path: str) -> list[str] | None:
    """The aids (``TRAINING_AIDS``, and a rotary base other than the default) that any run in a toy model's training
    chain used, oldest run first, each once: its ``training.json`` and the ``base`` records of the runs it continued.
    None for a hub id or a folder without a training record."""
    import json

    from vlmflow.toy.model import ToyModelConfig

    path = _model_folder(name_or_path) / "training.json"
    if not path.is_file():
        return None
    last = json.loads(path.read_text())
    aids = []
    for record in [*_base_runs(last), last]:
        config = record.get("train_config", {})
        found = [phrase(config.get(field)) for field, phrase in TRAINING_AIDS]
        theta = record.get("model_config", {}).get("rope_theta", ToyModelConfig.rope_theta)
        found.append(f"rotary base {theta:g}" if theta != ToyModelConfig.rope_theta else None)
        aids += [a for a in found if a is not None and a not in aids]
    return aids


def status_text(status: list[dict] | None) -> str:
    """One line on a model's quality targets (:func:`target_status` rows): never evaluated, all met, or each unmet
    check with its value and bound (and its interval, when recorded)."""
    if status is None:
        return "not evaluated"
    unmet = [r for r in status if not r["met"]]
    if not unmet:
        return "targets met"
    return "unmet: " + ", ".join((f"{u['metric']} under knockout {u['value']:.3f} > {u['bound']:g}"
                                  if u["check"].startswith("knockout") else
                                  f"{u['metric']} {u['value']:.3f} < {u['bound']:g}") +
                                 (f" ({_LEVEL} interval {_interval_cell(u)})" if u.get("interval") else "") for u in unmet)


def evaluate_all(vlm, *, n: int = 200, seed: int = 0, split: str = "test", knockout: bool = True,
                 scene_config: SceneConfig = SceneConfig()) -> dict:
    """The model card's table: plain metrics and, if asked, the same under the full image knockout, each with its
    bar metrics' intervals (``bar_intervals``)."""
    import platform

    import torch
    import transformers

    conds = ["plain"] + (["full_knockout"] if knockout else [])
    planted = getattr(vlm, "planted", ())
    rows = {cond: item_rows(vlm, n=n, seed=seed, split=split, scene_config=scene_config,
                            knockout=cond == "full_knockout") for cond in conds}
    return {"metrics": {cond: metrics_of(r, n_scenes=n) for cond, r in rows.items()},
            "intervals": {cond: bar_intervals(r) for cond, r in rows.items()},
            "chance": {k: round(v, 4) for k, v in CHANCE.items()},
            "n_scenes": n, "seed": seed, "split": split, "scene_config": scene_config.__dict__,
            "knockout": 'vf.Knockout("image", ("text", "generated")), all layers',
            "plant": [k.spec_id for k in planted], "targets": targets_for(vlm.adapter.name, bool(planted)),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}}


_CARD_METRICS = [("describe_f1", "description object F1 (exact size-colour-shape, mean per image)"),
                 ("describe_f1_pooled", "description object F1 (pooled over objects)"),
                 ("exists_acc", "yes/no existence accuracy (balanced pairs)"),
                 ("exists_yes_acc", "- of which the `yes` questions"),
                 ("exists_no_color_acc", "- `no`, a present shape in an absent colour"),
                 ("exists_no_shape_acc", "- `no`, a present colour on an absent shape"),
                 ("exists_no_random_acc", "- `no`, any other absent pair"),
                 ("count_acc", "counting accuracy (how many objects ?)"),
                 ("color_acc", "colour accuracy (what color is the SHAPE ?)"),
                 ("color_multi_acc", "- of which scenes with 2+ objects (the question must find its object)"),
                 ("position_acc", "position accuracy (where is the COLOR SHAPE ?)")]


def _metric_rows(results: dict) -> list[str]:
    """The evaluation table's rows: one per metric, a cell per condition (plain, full knockout), then chance."""
    m = results["metrics"]
    rows = []
    for k, label in _CARD_METRICS:
        cells = [f"{m[c][k]:.3f}" if k in m[c] else "-" for c in m]
        chance = results["chance"].get(k)
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {'-' if chance is None else f'{chance:.3f}'} |")
    return rows


def _base_runs(train: dict) -> list[dict]:
    """The runs a continued model (``--init``) stands on, oldest first: its ``base`` record, that record's own
    ``base``, and so on (empty for a model trained from scratch)."""
    base = train.get("base")
    return [*_base_runs(base), base] if base else []


def _base_labels(n: int) -> list[str]:
    """Step labels of ``n`` base runs in the history table: ``base`` for one, ``base 1:`` .. ``base n:`` for a chain."""
    return ["base "] if n == 1 else [f"base {k}: " for k in range(1, n + 1)]


def _history_rows(train: dict) -> list[str]:
    """The held-out evaluations logged during training (training.json's history), one table row each; a continued
    model lists the runs it stands on first (``_base_runs``), their steps marked ``base`` (``base k:`` in a chain)."""
    bases = _base_runs(train)
    runs = [*zip(bases, _base_labels(len(bases))), (train, "")]
    return [f"| {label}{h.get('step')} | {h.get('minutes')} | {h.get('loss')} | {h.get('describe_f1')} | "
            f"{h.get('exists_acc')} | {h.get('count_acc')} | {h.get('color_acc')} | {h.get('position_acc')} |"
            for run, label in runs for h in run.get("history", [])]


def _continued_line(train: dict) -> str:
    """The card's line on the runs a continued model (``--init`` of a folder with a training record) stands on."""
    bases = _base_runs(train)
    if not bases:
        return ""
    if len(bases) == 1:
        return (f"- Continues the run `{bases[0].get('command')}` ({bases[0].get('steps')} steps, stopped there): this "
                f"run loaded its exported\n  weights and trained on with the settings below; the history table lists "
                f"that run first (steps marked `base`).\n")
    chain = "; ".join(f"{k}. `{b.get('command')}` ({b.get('steps')} steps)" for k, b in enumerate(bases, 1))
    return (f"- Continues a chain of runs, each loading the previous one's export: {chain}. This run loaded the last\n"
            f"  one's export and trained on with the settings below; the history table lists those runs first (steps "
            f"marked `base k:`).\n")


def _training_lines(train: dict) -> tuple[str, str, str]:
    """(stage 1 line, the loss's probe term, stage 2 line) of the card's Training section, from training.json."""
    tc = train.get("train_config", {})
    stage1_length = (f"{tc['vision_steps']} steps" if tc.get("vision_steps")
                     else f"{tc.get('vision_minutes')} minutes")
    vision_line = (f"- Stage 1, vision pretraining (the toy analogue of a pretrained CLIP and LLaVA's projector alignment,\n"
                   f"  `vlmflow.toy.probe`): tower + projector alone for {stage1_length}, until a token probe scoring\n"
                   f"  every image token {'by cosine ' if tc.get('probe_cosine') else ''}against the LM's word embeddings names the shape, colour and size of the object under\n"
                   f"  it: {train['vision_pretraining']}. The probe is not part of this model.\n"
                   if train.get("vision_pretraining") else "")
    aux_text = f", plus {tc['aux_weight']} x the token-probe loss" if train.get("vision_pretraining") else ""
    stage2 = []
    if tc.get("mimetic"):
        stage2.append("the LM's attention starts from a mimetic initialisation (per head W_k = W_q, `train.mimetic_init`)")
    if tc.get("hide_until"):
        stage2.append(f"a context curriculum hides the system prompt and the background image tokens from the text "
                      f"with probability 1 at the start, falling linearly to 0 at {tc['hide_until']:.0%} of the schedule "
                      f"(`train.hidden_context`; attention mask only)")
    if tc.get("fixed_words"):
        stage2.append(f"the embedding rows of {', '.join(f'`{w}`' for w in tc['fixed_words'])} keep their random start "
                      f"(a fixed readout, `train.FixedRows`: with trained rows the yes/no answer collapsed to chance)")
    if tc.get("probe_question") is not None:
        stage2.append(f"a question probe asks language-model layer {tc['probe_question']}'s output at the answer position to "
                      f"name the shape and colour words of the question ({tc.get('question_weight')} x its loss; "
                      f"`probe.AnswerTap`; not part of this model)")
    stage2_line = ("- Stage 2, all weights on the questions: " + "; ".join(stage2) + ".\n") if stage2 else ""
    return vision_line, aux_text, stage2_line


def _clip_text(results: dict) -> str:
    """The card's clip paragraph (a toy with a video input evaluated with ``--clips``), empty otherwise."""
    clips = results.get("clips")
    if not clips:
        return ""
    recall = {f: clips.get(f"describe_video_recall_{f}") for f in FACT_FAMILIES}
    recalls = [f"{family} {value:.3f}" for family, value in recall.items() if value is not None]
    recall_text = (f"; recall of each fact family (`toy.clips.recall_by_family`: first-frame objects, then each event "
                   f"kind): {', '.join(recalls)}" if recalls else "")
    interval = clips.get("describe_video_f1_interval")
    ci = f" ({_LEVEL} interval [{interval[0]:.3f}, {interval[1]:.3f}])" if interval else ""
    return (f"\nHeld-out toy clips ({clips['n_clips']} clips of 2-4 frames, test split, seed {results['seed']}, "
            f"through the video input, greedy): description fact F1 {clips['describe_video_f1']:.3f}{ci} "
            f"(`toy.clips.score_clip`: the first frame's objects and each event){recall_text}; object count at the "
            f"end {clips['count_at_end_acc']:.3f}.\n")


def _status(results: dict) -> tuple[list[str], str]:
    """(the Status table's rows, the verdict sentence): computed from ``target_status``, never typed."""
    status = target_status(results)
    rows = [f"| {r['check']} | {r['metric']} | {r['value']:.3f} | {_interval_cell(r)} | {r['bound']:.3f} | "
            f"{'yes' if r['met'] else '**no**'} |" for r in status]
    verdict = ("meets every quality target below, and the full knockout brings every metric to chance"
               if all(r["met"] for r in status) else
               "does **not** meet every quality target below; its findings describe this model, not the paper's")
    close = undecided(status)
    if close:
        verdict += (f". The bound lies inside the {_LEVEL} interval of " +
                    ", ".join(f"{r['metric']} ({'met' if r['met'] else 'missed'})" for r in close) +
                    ": on this sample that side of the bar is not decided")
    return rows, verdict


def _interval_cell(row: dict) -> str:
    return "-" if not row.get("interval") else f"[{row['interval'][0]:.3f}, {row['interval'][1]:.3f}]"


def _plant_text(plant, name: str, train: dict, architecture: str) -> tuple[str, str]:
    """(the card's opening, its "Planted mechanism" section) for a planted model; the default toy model's without."""
    if plant is None:
        where = (' It is the default\nmodel of `vf.load("toy")` (loaded from this folder, no download).' if name == "toy"
                 else f' Loaded by\n`vf.load("{name}")` (from this folder, no download).')
        return (f"A small `{architecture}` trained from scratch by this project on synthetic toy scenes\n"
                f"(`vlmflow.toy`), so that every experiment of the book runs on a CPU with exact ground truth.{where}", "")
    init = train.get("train_config", {}).get("init")
    opening = (f"A small `{architecture}` fine-tuned by this project from the default toy model "
               f"(`{init}`) on synthetic toy\nscenes with a mechanism planted by knockouts, so that the book can check "
               f"whether its analyses find a mechanism that is known\nby construction. Loaded by `vf.load(\"{name}\")` "
               f"(from this folder, no download).")
    section = f"""
## Planted mechanism
Planted: {plant.description}.
Knockouts (`vf.Knockout` string form): {', '.join(f'`{s}`' for s in plant.spec_ids)}; recorded in this folder's
`plant.json`. Training applied them to every sample through the library's one registered attention function, and
`vf.load` applies them **by default whenever the model runs** (plain generation, sweeps, localization and the
evaluation below), added to any knockout a caller asks for; re-prompting (`vlmflow.reprompt`) refuses a planted model,
since its answer turn runs outside the attention function's state. `vf.load("{name}", plant=False)` runs the bare
weights, which are off their training distribution. Every number on this card is measured under the plant.
"""
    return opening, section


def write_model_card(model_dir: str | os.PathLike, results: dict, command: str, name: str = "toy") -> Path:
    """MODEL_CARD.md in ``model_dir``: architecture, the exact training command and seed, versions, the training
    history (from training.json) and the evaluation table (plain vs full knockout, with chance levels); eval.json
    beside it. Over 60 lines because most of it is the card's text, one template; the tables and sentences it
    fills in come from the helpers above."""
    import json

    from vlmflow.atomic import atomic_write, atomic_write_json
    from vlmflow.toy.architectures import architecture_card

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    train = json.loads((model_dir / "training.json").read_text()) if (model_dir / "training.json").exists() else {}
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    total_mb = sum(p.stat().st_size for p in files) / 2 ** 20
    m = results["metrics"]
    rows, hist, hist_rows = _metric_rows(results), train.get("history", []), _history_rows(train)
    tc = train.get("train_config", {})
    vision_line, aux_text, stage2_line = _training_lines(train)
    clip_line = (f"\n  A seeded {tc['clip_fraction']:.0%} of the main-stage steps train on toy clips (`toy.clips`, 2-4 "
                 f"frames) through the video input." if tc.get("clip_fraction") else "")
    status_rows, verdict = _status(results)
    negatives_text = (f"; the yes/no pairs' negatives drawn by rule {tc['exists_negatives']} (`questions.exists_pair`)"
                      if tc.get("exists_negatives") else "")
    from vlmflow.plant import read_plant

    plant = read_plant(model_dir)
    opening, plant_section = _plant_text(plant, name, train, cfg["architectures"][0])
    title = "vlmflow toy model" + ("" if name == "toy" else f" `{name}`")
    text = f"""# {title}

{opening}
{plant_section}
## Status
On the held-out test split ({results['n_scenes']} scenes, seed {results['seed']}) this model {verdict}.

| check | metric | value | {_LEVEL} interval | bound | met |
|---|---|---|---|---|---|
{chr(10).join(status_rows)}

Intervals: {_LEVEL} percentile bootstrap over the test scenes (clips), {BAR_RESAMPLES} resamples; "met" compares the value with the bound.

## Architecture
{architecture_card(cfg, total_mb)}

## Training
- Command: `{command}`
{_continued_line(train)}- Data: fresh train-split toy scenes every batch (scene seed `[{tc.get('seed')}, 0, index]`), never repeated;
  1-4 objects, 5 shapes, 6 colours, 2 sizes, 128 px (4 x 4 cells of 32 px, each under 2 x 2 image tokens), plain background. Question mix {train.get('kind_mix')}{negatives_text}.
  Curriculum (fraction of the schedule, max objects from then on): {tc.get('curriculum') or 'none'}.{clip_line}
{vision_line}{stage2_line}- Loss: mean over each sample's answer tokens (+ EOS), then over samples{aux_text}. AdamW lr {tc.get('lr')}, batch
  {tc.get('batch_size')}, warmup {tc.get('warmup_steps')} steps then cosine decay over {f"{tc['steps']} steps" if tc.get('steps') else 'the wall-clock budget'}, grad clip 1.
- Steps: {train.get('steps')} in {hist[-1]['minutes'] if hist else '?'} minutes on a shared 2-core CPU ({tc.get('threads', 2)} torch threads).

Held-out (val split, greedy) during training:

| step | minutes | loss (EMA) | describe F1 | yes/no | count | colour | position |
|---|---|---|---|---|---|---|---|
{chr(10).join(hist_rows)}

## Evaluation (test split, {results['n_scenes']} scenes, seed {results['seed']}, greedy)
Produced by `vlmflow toy eval --model {'data/toy_model' if name == 'toy' else name} --n {results['n_scenes']} --seed {results['seed']} --knockout{f" --clips {results['clips']['n_clips']}" if 'clips' in results else ''} --card`.
The full knockout hides the image from every text and generated token in every LM layer
({results['knockout']}).

| metric | {' | '.join(m)} | chance |
|---|{'---|' * len(m)}---|
{chr(10).join(rows)}

Counts per question kind: {', '.join(f"{k[:-2]}={m['plain'][k]}" for k in m['plain'] if k.endswith('_n'))}.
{_clip_text(results)}
## Versions
{', '.join(f'{k} {v}' for k, v in results['versions'].items())}.

## Limits
A toy: it knows only the 5 shapes, 6 colours and 2 sizes of the toy world and the question templates in
`vlmflow.toy.questions`; words outside its vocabulary become `<unk>`. Mechanisms found in it (which layers carry the
image, where objects are read) are findings about this small model {'trained from scratch' if plant is None else 'and its plant'}, not about large VLMs.
"""
    path = atomic_write(model_dir / "MODEL_CARD.md", text)
    atomic_write_json(model_dir / "eval.json", results, indent=1)
    return path


def item_rows(vlm, *, n: int = 100, seed: int = 0, split: str = "test", knockout: bool = False,
              kinds: tuple[str, ...] = KINDS,
              scene_config: SceneConfig = SceneConfig(), batch_size: int = 32, progress: bool = True) -> list[dict]:
    """The questions of :func:`evaluate` (same scenes, same draws), answered through the core library, one row each.

    ``vlm`` is a ``vlmflow.VLM`` (``vf.load("toy")`` or any supported model); ``knockout=True`` hides the image from
    every text and generated token in every layer with ``vf.Knockout("image", ("text", "generated"))``. Figures need
    rows rather than :func:`evaluate`'s averages: bootstrap CIs over scenes (``scene``), yes/no answer distributions
    and accuracy by true answer (``vlmflow.scoring``), per-attribute description scores.

    Row: scene, n_objects, kind, question, truth, answer, parsed (``parse_yes_no(rule="mme")`` for exists,
    ``normalize_answer`` otherwise; None = unparseable), correct; describe rows add f1 / precision / recall of the
    exact (size, colour, shape) triple, n_matched / n_extra / n_missed (objects matched, named but absent, present
    but not named), f1_shape / f1_color / f1_size (the exact judge's per-attribute matching), n_truth, n_answer and
    count_equal (as many objects named as there are); exists rows add negative (the rule that drew a ``no`` question:
    ``color``, ``shape`` or ``random``; None for the ``yes`` question).
    """
    from tqdm.auto import tqdm

    from vlmflow.judge import get_judge
    from vlmflow.knockout import Knockout
    from vlmflow.progress import bar_disabled
    from vlmflow.scoring import normalize_answer, parse_yes_no

    items = [it for it in _items(n, seed, split, scene_config) if it.kind in kinds]
    ko = Knockout(source="image", target=("text", "generated")) if knockout else None
    exact = get_judge("exact")
    rows: list[dict] = []
    batches = []
    for kind in kinds:  # one kind per batch: similar prompt and answer lengths
        same = [it for it in items if it.kind == kind]
        batches += [same[s:s + batch_size] for s in range(0, len(same), batch_size)]
    label = "full knockout" if knockout else "plain"
    for chunk in tqdm(batches, desc=f"toy questions ({label})", unit="batch", disable=bar_disabled(progress)):
        max_new = 4 * scene_config.max_objects + 8 if chunk[0].kind == "describe" else 6
        gens = vlm.generate([it.image for it in chunk], [it.question for it in chunk], knockout=ko,
                            max_new_tokens=max_new)
        for it, gen in zip(chunk, gens):
            row = {"scene": it.scene, "n_objects": it.n_objects, "kind": it.kind, "question": it.question,
                   "truth": it.answer, "answer": gen.text}
            if it.kind == "exists":
                row["negative"] = it.negative
            if it.kind == "describe":
                j = exact.judge(it.answer, gen.text)
                attributes = j.details["attributes"]
                row.update(parsed=gen.text, correct=j.f1 == 1.0, f1=j.f1, precision=j.precision, recall=j.recall,
                           n_matched=len(j.tp), n_extra=len(j.fp), n_missed=len(j.fn),
                           **{f"f1_{a}": attributes[a]["f1"] for a in ("shape", "color", "size")},
                           n_truth=j.details["count"]["reference"], n_answer=j.details["count"]["candidate"],
                           count_equal=bool(j.details["count"]["equal"]))
            else:
                parse = (lambda t: parse_yes_no(t, rule="mme")) if it.kind == "exists" else normalize_answer
                parsed = parse(gen.text)
                row.update(parsed=parsed, correct=parsed is not None and parsed == parse(it.answer))
            rows.append(row)
    return rows
