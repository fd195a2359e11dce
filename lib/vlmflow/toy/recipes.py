"""Named training recipes for the toy model: which training grows the paper's mechanisms (``vlmflow toy train
--recipe NAME --cpu-minutes N``, the book's chapter "Which training grows it?").

Every recipe is the shipped recipe (``toy/train.py``) with one change motivated by how real VLMs are trained, and all
of them share the study's setting (:func:`config`):

- **one CPU budget** for the whole training of every recipe, counted as this process's CPU time
  (``time.process_time``, ``TrainConfig.clock = "process"``, one torch thread), so that other jobs on a shared machine
  do not give one recipe more compute than another; a recipe with a stage of its own (``text-first``) spends part of
  the same budget on it;
- **the vision side from the shipped toy model**: the CLIP tower and projector are copied from ``data/toy_model``
  (the toy analogue of LLaVA starting from a pretrained CLIP and an aligned projector), the tower stays frozen, the
  projector trains, and the language model starts from scratch. The comparison is then about the language model
  and its training, and no budget goes to vision pretraining (stage 1 is skipped).

The recipe is applied through ``train(..., prepare=...)`` (:func:`prepare_for`): the vision weights are loaded and
the tower frozen there, and ``text-first`` runs its text-only stage (:func:`pretrain_text`) there, before the
main stage. The exported model's ``training.json`` records the recipe, the budget and the CPU time each stage used
(``recipe``, ``prepared``).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vlmflow.toy.train import KIND_MIX, TrainConfig, TrainingError

TEXT_INDEX_OFFSET = 2 ** 41  # text-stage scenes come from the train split far past anything the other stages draw


@dataclass(frozen=True)
class Recipe:
    """One natural recipe: what it changes against the shipped recipe, and why a real VLM might train that way."""

    name: str
    change: str  # what differs from the baseline, in words
    why: str  # why it might make the model compress the image into the text
    train: dict = field(default_factory=dict)  # TrainConfig field overrides
    model: dict = field(default_factory=dict)  # ToyModelConfig field overrides
    scenes: dict = field(default_factory=dict)  # SceneConfig field overrides (training scenes)
    text_fraction: float = 0.0  # share of the CPU budget spent first on text alone (pretrain_text)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("baseline", "the shipped recipe (mimetic initialisation, context curriculum, 8 layers, 1-4 objects, "
                       "one question per image)",
           "the control: the shipped model's training under the study's budget and vision start"),
    Recipe("text-first", "the language model first trained on text alone for 30% of the budget: the scene written "
                         "out in words where the image goes, then the same questions",
           "LLaVA starts from an LLM trained on text: a model that already answers from words in its context may "
           "keep reading the words (the query) rather than the new image tokens",
           text_fraction=0.3),
    Recipe("no-mimetic", "no mimetic initialisation of the attention (W_k and W_q drawn independently)",
           "the mimetic start makes a query prefer keys like itself, which lets generated object words find the "
           "image tokens of their object directly; real LLMs start from plain random attention",
           train={"mimetic": False}),
    Recipe("deep", "a 12-layer language model instead of 8 (same width)",
           "real LLMs are deep; with more layers there is room for a stage that moves the image into the text "
           "before the layers that write the answer",
           model={"text_layers": 12}),
    Recipe("crowded", "scenes with 1-8 objects instead of 1-4 (curriculum 2, 4, then 8 objects), so descriptions "
                      "are up to twice as long",
           "with more to carry, a model may benefit from summarising the image once, in the prompt, instead of "
           "searching the image anew for every generated word",
           train={"curriculum": ((0.0, 2), (0.15, 4), (0.3, 8))}, scenes={"max_objects": 8}),
)}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise TrainingError(f"unknown training recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]


def config(name: str, cpu_minutes: float, *, seed: int = 0, base: TrainConfig | None = None) -> TrainConfig:
    """The TrainConfig of recipe ``name`` under a total budget of ``cpu_minutes`` of process CPU time (one torch
    thread, no vision stage; the main stage gets what the recipe's own stage leaves)."""
    if not cpu_minutes > 0:
        raise TrainingError(f"the CPU budget must be positive, got {cpu_minutes} minutes")
    r = recipe(name)
    base = base or TrainConfig()
    cfg = replace(base, seed=seed, threads=1, clock="process", vision_minutes=0.0, vision_steps=None,
                  minutes=cpu_minutes * (1 - r.text_fraction), eval_minutes=max(cpu_minutes / 3, 1.0), **r.train)
    return replace(cfg, model=replace(cfg.model, **r.model), scenes=replace(cfg.scenes, **r.scenes))


# ----------------------------------------------------------------------------------------------- the vision start
VISION_PARTS = ("vision_tower", "multi_modal_projector")  # submodules of LlavaModel the study copies
VISION_PREFIXES = tuple(f"model.{part}." for part in VISION_PARTS)  # their parameter names in the full model


def load_vision(model, source: str | os.PathLike) -> int:
    """Copy the CLIP tower and projector weights of the toy model folder ``source`` into ``model`` (float32);
    -> the number of tensors copied. The two must agree on every vision and projector tensor's name and shape."""
    import torch
    from transformers import LlavaForConditionalGeneration

    if not (Path(source) / "config.json").is_file():
        raise TrainingError(f"no toy model weights at {source} to take the vision tower and projector from")
    theirs = LlavaForConditionalGeneration.from_pretrained(str(source), dtype=torch.float32)
    n = 0
    for part in VISION_PARTS:
        src, dst = getattr(theirs.model, part).state_dict(), getattr(model.model, part).state_dict()
        if set(src) != set(dst):
            raise TrainingError(f"{source}: its {part} has other tensors than this model's "
                                f"({sorted(set(src) ^ set(dst))[:3]})")
        for k, v in src.items():
            if v.shape != dst[k].shape:
                raise TrainingError(f"{source}: {part}.{k} has shape {tuple(v.shape)}, this model's "
                                    f"{tuple(dst[k].shape)}")
        with torch.no_grad():
            for k, v in src.items():
                dst[k].copy_(v)
        n += len(src)
    return n


# -------------------------------------------------------------------------------------------------- text first
def text_prompt(scene, question: str) -> str:
    """The LLaVA-1.5 prompt with the scene written out in words where the image goes (``text-first``)."""
    from vlmflow.toy.model import IMAGE_TOKEN, build_prompt

    return build_prompt(question).replace(IMAGE_TOKEN, scene.description)


def text_batch(step: int, cfg: TrainConfig, tokenizer) -> dict:
    """Text-only batch ``step``: ``input_ids``, ``attention_mask`` and ``labels`` (-100 except the answer + EOS),
    right-padded; questions drawn with ``KIND_MIX`` about fresh train scenes, as in the main stage."""
    import torch

    from vlmflow.toy.questions import sample_question
    from vlmflow.toy.scenes import make_scene

    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 13, step]))
    kinds = list(KIND_MIX)
    p = np.array([KIND_MIX[k] for k in kinds])
    seqs, labels = [], []
    for i in range(cfg.batch_size):
        scene = make_scene(cfg.seed, "train", TEXT_INDEX_OFFSET + step * cfg.batch_size + i, cfg.scenes)
        qa = sample_question(scene, kinds[int(rng.choice(len(kinds), p=p / p.sum()))], rng)
        prompt = tokenizer(text_prompt(scene, qa.question))["input_ids"]
        answer = tokenizer(qa.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        seqs.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), tokenizer.pad_token_id, dtype=torch.long)
    lab = torch.full((len(seqs), T), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, (s, a) in enumerate(zip(seqs, labels)):
        ids[i, :len(s)], lab[i, :len(s)], mask[i, :len(s)] = torch.tensor(s), torch.tensor(a), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def pretrain_text(model, tokenizer, cfg: TrainConfig, cpu_minutes: float, steps: int | None = None,
                  log=print) -> dict:
    """Train the language model alone (embeddings, decoder, head; no image) on text batches for ``cpu_minutes`` of
    process CPU time (or ``steps``): warmup, then cosine decay over the budget. -> steps, loss, CPU minutes used."""
    import torch
    from tqdm import tqdm

    from vlmflow.toy.train import lr_factor, optimizer_step, per_sample_loss

    params = [p for n, p in model.named_parameters() if not n.startswith(VISION_PREFIXES) and p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    t0 = time.process_time()
    budget = cpu_minutes * 60
    step, ema = 0, None
    bar = tqdm(total=steps, desc="toy text-first", mininterval=10)
    model.train()
    while (step < steps) if steps is not None else (time.process_time() - t0 < budget):
        frac = step / steps if steps is not None else (time.process_time() - t0) / budget
        f = lr_factor(int(frac * 10 ** 6), 10 ** 6, 0, cfg.min_lr_ratio) * min(1.0, (step + 1) / cfg.warmup_steps)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        batch = text_batch(step, cfg, tokenizer)
        labels = batch.pop("labels")
        loss = per_sample_loss(model(**batch).logits, labels)
        ema = optimizer_step(opt, loss, params, ema)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
    bar.close()
    result = {"steps": step, "loss": round(ema if ema is not None else math.nan, 4),
              "cpu_minutes": round((time.process_time() - t0) / 60, 2)}
    log("text-first stage " + json.dumps(result))
    return result


def prepare_for(name: str, cpu_minutes: float, cfg: TrainConfig, vision_from: str | os.PathLike,
                text_steps: int | None = None, log=print):
    """The ``prepare`` hook of ``train`` for recipe ``name``: the vision start (frozen tower, copied tower and
    projector) and, for a fresh run of a recipe with ``text_fraction``, its text-only stage."""
    r = recipe(name)

    def prepare(model, processor, fresh: bool) -> dict | None:
        model.model.vision_tower.requires_grad_(False)
        if not fresh:
            return None  # the checkpoint holds every weight and what the first run prepared
        from vlmflow.model import toy_model_path

        shipped = Path(vision_from).resolve() == toy_model_path().resolve()
        out = {"vision_from": "toy" if shipped else str(vision_from),  # no machine-specific path in a stored record
               "vision_tensors": load_vision(model, vision_from),
               "vision_tower": "frozen", "projector": "trained"}
        if r.text_fraction > 0:
            out["text_first"] = pretrain_text(model, processor.tokenizer, cfg, cpu_minutes * r.text_fraction,
                                              steps=text_steps, log=log)
        return out

    return prepare


def train_recipe(name: str, cpu_minutes: float, out: str | os.PathLike, work: str | os.PathLike, *,
                 seed: int = 0, resume: bool = False, vision_from: str | os.PathLike | None = None,
                 base: TrainConfig | None = None, text_steps: int | None = None, log=print,
                 command: str | None = None) -> dict:
    """Train recipe ``name`` under ``cpu_minutes`` of process CPU time into ``out`` (checkpoints in ``work``),
    and record the recipe and the budget in ``out/training.json``. ``vision_from``: the toy model folder that gives
    the vision tower and projector (default: the shipped one)."""
    from vlmflow.atomic import atomic_write_json
    from vlmflow.model import toy_model_path
    from vlmflow.toy.train import train

    cfg = config(name, cpu_minutes, seed=seed, base=base)
    vision_from = Path(vision_from) if vision_from is not None else toy_model_path()
    result = train(cfg, out, work, resume=resume, log=log, command=command,
                   prepare=prepare_for(name, cpu_minutes, cfg, vision_from, text_steps=text_steps, log=log))
    r = recipe(name)
    info_path = Path(out) / "training.json"
    info = json.loads(info_path.read_text())
    info["recipe"] = {"name": name, "change": r.change, "why": r.why, "cpu_budget_minutes": cpu_minutes,
                      "clock": "time.process_time (this process's CPU time, one torch thread)",
                      "text_fraction": r.text_fraction}
    atomic_write_json(info_path, info)
    return result


def export_checkpoint(name: str, planned_cpu_minutes: float, work: str | os.PathLike, out: str | os.PathLike, *,
                      seed: int = 0, base: TrainConfig | None = None, command: str | None = None) -> dict:
    """Export the model state of recipe ``name``'s last checkpoint (``work/checkpoint.pt``) to ``out`` (float16, with
    ``training.json``), for a run stopped before its planned budget: the recorded budget is the CPU time the
    checkpoint had used (its main stage plus the recipe's own stage), next to the planned one. -> the recipe record."""
    import torch

    from vlmflow.toy.model import ToyModelConfig, build
    from vlmflow.toy.train import KIND_MIX as MIX
    from vlmflow.toy.train import export

    path = Path(work) / "checkpoint.pt"
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}")
    state = torch.load(path, weights_only=False, map_location="cpu")
    cfg = config(name, planned_cpu_minutes, seed=seed, base=base)
    saved_model = ToyModelConfig.recorded(state["model_config"])
    if saved_model != cfg.model.to_dict():
        raise TrainingError(f"{path} holds a model of config {saved_model}, not recipe {name!r}'s")
    model, processor = build(cfg.model, seed=seed)
    model.load_state_dict(state["model"])
    prepared = state.get("prepared") or {}
    stage = (prepared.get("text_first") or {}).get("cpu_minutes", 0.0)
    r = recipe(name)
    record = {"name": name, "change": r.change, "why": r.why,
              "cpu_budget_minutes": round(state["elapsed"] / 60 + stage, 2), "planned_cpu_minutes": planned_cpu_minutes,
              "stopped_at_checkpoint": True, "clock": "time.process_time (this process's CPU time, one torch thread)",
              "text_fraction": r.text_fraction}
    export(model.eval(), processor, out, half=True, extra={
        "train_config": {k: v for k, v in cfg.__dict__.items() if k not in ("model", "scenes")},
        "model_config": cfg.model.to_dict(), "scene_config": cfg.scenes.__dict__, "kind_mix": MIX,
        "command": command, "steps": state["step"], "total_steps": state["total_steps"],
        "history": state.get("history", []), "prepared": prepared, "recipe": record})
    return record


__all__ = ["RECIPES", "Recipe", "config", "export_checkpoint", "load_vision", "prepare_for", "pretrain_text", "recipe", "text_batch",
           "text_prompt", "train_recipe"]
