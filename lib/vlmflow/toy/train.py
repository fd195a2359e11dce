"""Train the toy VLM from scratch on fresh toy scenes (``vlmflow toy train``).

Data: batch ``b`` uses train-split scenes ``b*B .. b*B+B-1`` of ``--seed`` (never repeated, so no overfitting
and an exact resume); each sample gets one question drawn with ``KIND_MIX`` (60% descriptions, 40% short
questions with balanced yes/no). Target = the answer tokens + EOS after ``ASSISTANT:``; the loss is the mean
over each sample's answer tokens, then over samples, so a one-word ``yes`` weighs as much as a description.
Optimiser: AdamW, linear warmup then cosine decay to 5%, over ``--steps`` steps or, by default, over the wall-clock
budget (``--minutes``, plus the time already spent when resuming), gradient clipping at 1.
Checkpoints (model + optimiser + step) are written atomically to ``WORK/checkpoint.pt`` every few minutes;
``--resume`` continues from there. Periodic held-out (val split) evaluation lines go to the log; at the end
the model is exported in half precision with its processor to ``--out`` (``evaluate.py`` then measures it).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmflow.errors import VlmflowError
from vlmflow.toy.model import ToyModelConfig, build_prompt
from vlmflow.toy.questions import sample_question
from vlmflow.toy.scenes import SceneConfig, make_scene

KIND_MIX = {"describe": 0.6, "exists": 0.2, "count": 0.07, "color": 0.08, "position": 0.05}


class TrainingError(VlmflowError):
    pass


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 150
    min_lr_ratio: float = 0.05
    steps: int | None = None  # fixed schedule length; None -> estimated from minutes
    minutes: float = 75.0  # wall-clock budget for this invocation
    checkpoint_minutes: float = 5.0
    eval_minutes: float = 10.0
    eval_scenes: int = 32
    threads: int = 2
    share_prefix: bool = True  # run the image-independent prompt prefix once per batch (same loss, less compute)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)


class Batcher:
    """Turns scenes + questions into right-padded training tensors (labels -100 outside the answer + EOS)."""

    def __init__(self, processor):
        self.processor = processor
        self.tok = processor.tokenizer
        self._prompt_ids: dict[str, list[int]] = {}  # question -> expanded prompt ids (few distinct questions)

    def prompt_ids(self, question: str) -> list[int]:
        ids = self._prompt_ids.get(question)
        if ids is None:
            # Expand the image placeholder exactly as the processor does at inference time.
            ids = self.processor(text=[build_prompt(question)], images=[self._blank()],
                                 return_tensors="np")["input_ids"][0].tolist()
            self._prompt_ids[question] = ids
        return ids

    def _blank(self):
        from PIL import Image

        s = self.processor.image_processor.crop_size["height"]
        return Image.new("RGB", (s, s))

    def __call__(self, images, qas):
        import torch

        seqs, labels = [], []
        for qa in qas:
            p = self.prompt_ids(qa.question)
            a = self.tok(qa.answer, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            seqs.append(p + a)
            labels.append([-100] * len(p) + a)
        T = max(len(s) for s in seqs)
        B = len(seqs)
        input_ids = torch.full((B, T), self.tok.pad_token_id, dtype=torch.long)
        label_t = torch.full((B, T), -100, dtype=torch.long)
        attn = torch.zeros((B, T), dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            input_ids[i, :len(s)] = torch.tensor(s)
            label_t[i, :len(s)] = torch.tensor(lab)
            attn[i, :len(s)] = 1
        pixel_values = self.processor.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"input_ids": input_ids, "attention_mask": attn, "pixel_values": pixel_values, "labels": label_t}


def per_sample_loss(logits, labels):
    """Mean CE over each sample's target tokens, then mean over samples. logits [B, T, V], labels [B, T]."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                         ignore_index=-100, reduction="none").view(shift_labels.shape)
    mask = (shift_labels != -100).float()
    return ((ce * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def forward_loss(model, batch, share_prefix: bool = True):
    """Per-sample loss of a training batch (``labels`` inside ``batch``).

    With ``share_prefix`` the text before the image (BOS + system prompt + ``USER:``, ~30% of every sequence and
    identical across the batch) runs once, and its keys/values are broadcast to the batch as a DynamicCache
    that gradients flow through. Under causal attention this gives the same loss and gradients as the plain
    forward (tests/unit/test_toy_model.py checks it) for ~20% less compute per step."""
    batch = dict(batch)
    labels = batch.pop("labels")
    ids = batch["input_ids"]
    if not share_prefix:
        return per_sample_loss(model(**batch).logits, labels)
    is_img = ids == model.config.image_token_id
    P = int(is_img[0].nonzero()[0, 0])  # first image position
    if not torch_equal_rows(ids[:, :P]) or not bool(batch["attention_mask"][:, :P].all()):
        raise TrainingError("share_prefix needs a right-padded batch whose text before <image> is identical")
    B = ids.shape[0]
    prefix = model(input_ids=ids[:1, :P], use_cache=True)
    cache = prefix.cache
    for layer in cache.layers:
        layer.keys = layer.keys.expand(B, -1, -1, -1)
        layer.values = layer.values.expand(B, -1, -1, -1)
    out = model(input_ids=ids[:, P:], pixel_values=batch["pixel_values"], attention_mask=batch["attention_mask"],
                cache=cache, use_cache=True)
    # position P-1 predicts the first image token, which is never a target, so dropping it loses nothing
    return per_sample_loss(out.logits, labels[:, P:])


def torch_equal_rows(x) -> bool:
    return bool((x == x[:1]).all())


def make_batch(step: int, cfg: TrainConfig, batcher: Batcher, split: str = "train"):
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 11, step]))
    kinds = list(KIND_MIX)
    p = np.array([KIND_MIX[k] for k in kinds])
    images, qas = [], []
    for i in range(cfg.batch_size):
        sc = make_scene(cfg.seed, split, step * cfg.batch_size + i, cfg.scenes)
        qa = sample_question(sc, kinds[int(rng.choice(len(kinds), p=p / p.sum()))], rng)
        images.append(sc.image)
        qas.append(qa)
    return batcher(images, qas)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export(model, processor, out: str | os.PathLike, *, half: bool = True, extra: dict | None = None) -> Path:
    """Save a copy of the model (fp16 by default) and its processor with save_pretrained, atomically per folder."""
    import copy
    import shutil

    import torch

    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    m = copy.deepcopy(model)
    if half:
        m = m.to(torch.float16)
    m.save_pretrained(tmp, safe_serialization=True)
    processor.save_pretrained(tmp)
    if extra:
        (tmp / "training.json").write_text(json.dumps(extra, indent=1))
    keep = out / "MODEL_CARD.md"
    if keep.exists():
        shutil.copy(keep, tmp / "MODEL_CARD.md")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def train(cfg: TrainConfig, out: str | os.PathLike, work: str | os.PathLike, resume: bool = False,
          log=print, command: str | None = None) -> dict:
    import torch
    from tqdm import tqdm

    from vlmflow.toy.evaluate import quick_eval
    from vlmflow.toy.model import build

    torch.set_num_threads(cfg.threads)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    model, processor = build(cfg.model, seed=cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    step, total, elapsed_before = 0, cfg.steps, 0.0
    history: list[dict] = []
    if resume:
        if not ckpt_path.exists():
            raise TrainingError(f"--resume: no checkpoint at {ckpt_path}")
        state = torch.load(ckpt_path, weights_only=False)
        if state["model_config"] != cfg.model.to_dict():
            raise TrainingError(f"--resume: {ckpt_path} was trained with model config {state['model_config']}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, total = state["step"], state["total_steps"]
        elapsed_before, history = state.get("elapsed", 0.0), state.get("history", [])
        log(f"resumed from {ckpt_path} at step {step} / {total}")
    batcher = Batcher(processor)
    model.train()
    t0 = time.time()
    deadline = t0 + cfg.minutes * 60
    last_ckpt = last_eval = t0
    ema = None

    def checkpoint():
        _atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                      "total_steps": total, "model_config": cfg.model.to_dict(), "seed": cfg.seed,
                      "elapsed": elapsed_before + time.time() - t0, "history": history}, ckpt_path)

    bar = tqdm(total=total, initial=step, desc="toy train", mininterval=10, smoothing=0.05)
    while cfg.steps is None or step < cfg.steps:
        if time.time() > deadline:
            log(f"wall-clock budget of {cfg.minutes} min reached at step {step}")
            break
        if cfg.steps is None:
            # time-based schedule: robust to the shared CPU slowing down mid-run (the budget always ends the decay)
            frac = (elapsed_before + time.time() - t0) / (elapsed_before + cfg.minutes * 60)
            f = lr_factor(int(frac * 10 ** 6), 10 ** 6, 0, cfg.min_lr_ratio)
            f *= min(1.0, (step + 1) / cfg.warmup_steps)
        else:
            f = lr_factor(step, total, cfg.warmup_steps, cfg.min_lr_ratio)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        loss = forward_loss(model, make_batch(step, cfg, batcher), share_prefix=cfg.share_prefix)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}", refresh=False)
        if total is None and step == 30:
            rate = (time.time() - t0) / step
            total = step + int((deadline - time.time()) / rate)
            bar.total = total
            log(f"{rate:.3f} s/step -> about {total} steps in {cfg.minutes} min (time-based cosine schedule)")
        now = time.time()
        if now - last_eval > cfg.eval_minutes * 60:
            model.eval()
            metrics = quick_eval(model, processor, n=cfg.eval_scenes, seed=cfg.seed, split="val",
                                 scene_config=cfg.scenes)
            model.train()
            metrics.update(step=step, loss=round(ema, 4), minutes=round((elapsed_before + now - t0) / 60, 1))
            history.append(metrics)
            log("eval " + json.dumps(metrics))
            last_eval = time.time()
        if now - last_ckpt > cfg.checkpoint_minutes * 60:
            checkpoint()
            export(model, processor, work / "latest", half=False)
            last_ckpt = time.time()
    bar.close()
    checkpoint()
    model.eval()
    metrics = quick_eval(model, processor, n=cfg.eval_scenes, seed=cfg.seed, split="val", scene_config=cfg.scenes)
    metrics.update(step=step, loss=round(ema or float("nan"), 4),
                   minutes=round((elapsed_before + time.time() - t0) / 60, 1))
    history.append(metrics)
    log("final eval " + json.dumps(metrics))
    export(model, processor, out, half=True,
           extra={"train_config": {k: v for k, v in cfg.__dict__.items() if k not in ("model", "scenes")},
                  "model_config": cfg.model.to_dict(), "scene_config": cfg.scenes.__dict__,
                  "kind_mix": KIND_MIX, "command": command, "steps": step, "total_steps": total, "history": history})
    log(f"exported to {out}")
    return {"step": step, "history": history}
