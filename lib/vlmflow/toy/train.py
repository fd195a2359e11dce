"""Train the toy VLM from scratch on fresh toy scenes (``vlmflow toy train``).

Data: batch ``b`` uses train-split scenes ``b*B .. b*B+B-1`` of ``--seed`` (never repeated, so no overfitting
and an exact resume); each sample gets one question drawn with ``KIND_MIX`` (45% descriptions, 55% short
questions, yes/no balanced); ``CURRICULUM`` caps the objects per scene early in the schedule (1-2, then 1-3,
then the full 1-4). Target = the answer tokens + EOS after ``ASSISTANT:``; the loss is the mean
over each sample's answer tokens, then over samples, so a one-word ``yes`` weighs as much as a description.
Optimiser: AdamW, linear warmup then cosine decay to 5%, over ``--steps`` steps or, by default, over the wall-clock
budget (``--minutes``, plus the time already spent when resuming), gradient clipping at 1.

Vision pretraining (``probe.py`` says why): a first stage (``--vision-minutes``) trains the tower and projector alone
so that a ``TokenProbe`` reads the shape, colour and size of the object under every image token against the LM's
word embeddings; the probe stays on in the main stage with weight ``aux_weight`` so the language-model loss cannot
wash those features out. The exported model is the plain ``LlavaForConditionalGeneration``.

Yes/no questions (balanced, MME-style) carry no answer signal in the question or the image alone, and the first
trained models answered them at chance however long they trained. Two measures against that plateau (see
``diagnostics/yesno_context_length.py`` for the text-only measurement behind them): the LM's attention starts from
``mimetic_init`` (queries prefer keys like themselves, so a question word finds the image tokens the probe aligned
with it), and a context curriculum (``hidden_context``, ``hide_until``) hides the system prompt and the background
image tokens from the text early in training, falling linearly to the full context, so that the circuit can first
form on a short context. Positions never change, only the attention mask.
A third, ``fixed_words`` (``FixedRows``; ``--fixed-words yes,no``), keeps the yes/no readout from collapsing while the
answer is still at chance: the runs that never left chance all ended with the ``yes`` and ``no`` rows of the tied
embedding at cosine 1.00 (``diagnostics/readout_collapse.py``).
Planting (``vlmflow.plant``): with ``plant`` set, every training sample carries the plant's ``vf.Knockout`` specs
with probability ``plant_probability``, applied through the one registered attention function
(``vlmflow.attention.active`` with per-row knockouts over the batch's ``TokenRoles``: prompt roles from the adapter,
the answer tokens ``generated``), so the model learns under exactly the masks that ``vf.Knockout`` applies at
inference. A hard plant (probability 1) is written to the exported folder's ``plant.json``, which ``vf.load`` applies
by default; ``init`` fine-tunes an existing model folder (in float32: float16 training gave NaN after one step).
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
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.errors import VlmflowError
from vlmflow.toy.architectures import split_extras
from vlmflow.toy.model import ToyModelConfig
from vlmflow.toy.questions import sample_question
from vlmflow.toy.scenes import SceneConfig, make_scene

if TYPE_CHECKING:
    import torch

KIND_MIX = {"describe": 0.4, "exists": 0.35, "count": 0.05, "color": 0.12, "position": 0.08}
# Curriculum on scene complexity: (fraction of the schedule, max objects per scene from then on). Simple scenes
# first make the early gradient of every question about one or two objects, so binding words to image tokens starts
# sooner; the last 70% of the schedule sees the full 1-4 objects.
CURRICULUM: tuple[tuple[float, int], ...] = ((0.0, 2), (0.15, 3), (0.3, 4))


class TrainingError(VlmflowError):
    pass


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 150
    min_lr_ratio: float = 0.05
    steps: int | None = None  # fixed schedule length; None -> estimated from minutes
    minutes: float = 80.0  # budget of the main stage in this invocation, in minutes of `clock`
    checkpoint_minutes: float = 5.0
    eval_minutes: float = 5.0
    eval_scenes: int = 32
    threads: int = 2
    share_prefix: bool = True  # run the image-independent prompt prefix once per batch (same loss, less compute)
    curriculum: tuple[tuple[float, int], ...] = CURRICULUM  # () = the full scene config from the start
    vision_minutes: float = 6.0  # stage 1: token-probe pretraining of tower + projector (0 = skip)
    vision_steps: int | None = None  # fixed stage-1 length instead of vision_minutes (tests)
    aux_weight: float = 0.3  # token-probe loss weight during the main stage (0 = off)
    probe_cosine: bool = True  # the probe scores directions (cosine x learned scale), see probe.py
    probe_scale: float | None = None  # the token probe's cosine scale fixed at this value (None: learned)
    probe_position: bool = False  # the probe also names the row and column of each token's object (probe.py)
    mimetic: bool = True  # mimetic initialisation of the LM's attention (mimetic_init)
    fixed_words: tuple[str, ...] = ()  # answer words whose embedding rows never train (FixedRows)
    hide_until: float = 0.4  # context curriculum (hidden_context) over this fraction of the schedule (0 = off)
    clock: str = "wall"  # what `minutes` (and the checkpoint / eval periods) count: "wall" time or "process" CPU time
    init: str | None = None  # fine-tune this model folder (loaded in float32) instead of building a new model
    plant: str | None = None  # a vlmflow.plant preset trained into the model (hard plant: recorded in the export)
    plant_probability: float = 1.0  # per-sample probability of the plant (< 1: the soft variant, none at inference)
    kind_mix: dict = field(default_factory=lambda: dict(KIND_MIX))  # question kind -> share of the samples
    exists_negatives: dict | None = None  # rule -> share of the exists "no" questions (None: questions.NEGATIVE_MIX)
    arch: str = "llava"  # toy architecture (toy/architectures.py): llava, internvl, qwen2-vl
    clip_fraction: float = 0.0  # share of stage-2 steps on toy clips through the video input (qwen2-vl; toy/video.py)
    probe_events: int | None = None  # LM layer whose video tokens name each frame's change (video.py; None = off)
    event_weight: float = 1.0  # the event probe's loss weight on clip steps
    event_attributes: bool = False  # the event probe also names the changed object's shape, colour, size (video.py)
    event_places: bool = False  # ... and a move's new row and column, at its new cells (video.py; needs event_attributes)
    probe_question: int | None = None  # LM layer whose answer position names the asked shape and colour (None = off)
    question_weight: float = 1.0  # the question probe's loss weight on still-scene steps
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    scenes: SceneConfig = field(default_factory=SceneConfig)

    @property
    def probe_heads(self):
        """The token probe's heads (``probe.HEADS``, then ``POSITION_HEADS`` with ``probe_position``)."""
        from vlmflow.toy.probe import HEADS, POSITION_HEADS

        return HEADS + POSITION_HEADS if self.probe_position else HEADS

    @property
    def probe_head_names(self) -> list[str]:
        """The names of ``probe_heads`` (a checkpoint records them; ``--resume`` compares them)."""
        return [name for name, _ in self.probe_heads]

    def scenes_at(self, frac: float) -> SceneConfig:
        """The scene config at ``frac`` (0..1) of the schedule: ``scenes`` with ``max_objects`` capped by the
        curriculum (never above the configured ``max_objects``)."""
        from dataclasses import replace

        cap = self.scenes.max_objects
        for start, k in self.curriculum:
            if frac >= start:
                cap = min(k, self.scenes.max_objects)
        return replace(self.scenes, max_objects=max(cap, self.scenes.min_objects))


class Batcher:
    """Turns scenes + questions into right-padded training tensors (labels -100 outside the answer + EOS), with
    whatever else the architecture's model needs (``toy/architectures.py``: ``arch.image_inputs``,
    ``arch.batch_extras``, which may read ``model``)."""

    def __init__(self, processor, arch=None, model=None, *, adapter=None):
        from vlmflow.toy.architectures import get_arch

        self.processor = processor
        self.tok = processor.tokenizer
        self.arch = arch or get_arch("llava")
        self.model = model
        self.adapter = adapter  # with an adapter, batches carry TokenRoles ("roles") for knockouts in training
        self._prompt_ids: dict[str, list[int]] = {}  # question -> expanded prompt ids (few distinct questions)
        self._prompt_roles: dict[str, list[int]] = {}

    def prompt_roles(self, question: str) -> list[int]:
        """Role ids of the prompt of ``question``, as the adapter labels it at inference (``VLM.prepare``)."""
        roles = self._prompt_roles.get(question)
        if roles is None:
            _, token_roles = self.adapter.prepare([self._blank()], [question])
            roles = self._prompt_roles[question] = token_roles.ids[0].tolist()
            if len(roles) != len(self.prompt_ids(question)):
                raise TrainingError(f"the adapter's prompt of {question!r} has {len(roles)} positions, the "
                                    f"training prompt {len(self.prompt_ids(question))}")
        return roles

    def prompt_ids(self, question: str) -> list[int]:
        ids = self._prompt_ids.get(question)
        if ids is None:
            # Expand the image placeholder exactly as the processor does at inference time.
            ids = self.processor(text=[self.arch.prompt(self.processor, question)], images=[self._blank()],
                                 return_tensors="np")["input_ids"][0].tolist()
            self._prompt_ids[question] = ids
        return ids

    def _blank(self):
        from PIL import Image

        s = self.arch.image_side(self.processor)
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
        image_inputs = self.arch.image_inputs(self.processor, images)
        extras = self.arch.batch_extras(self.model, input_ids, attn, image_inputs)
        batch = {"input_ids": input_ids, "attention_mask": attn, **image_inputs, **extras, "labels": label_t}
        if self.adapter is not None:
            batch["roles"] = self.roles(qas, seqs, T)
        return batch

    def roles(self, qas, seqs, T: int):
        """TokenRoles over whole training sequences (prompt_length = T): each prompt's roles, ``generated`` for the
        answer tokens (as when the model generates them), ``pad`` for the right padding."""
        import torch

        from vlmflow.roles import GENERATED, PAD, TokenRoles

        ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
        for i, (qa, s) in enumerate(zip(qas, seqs)):
            p = self.prompt_roles(qa.question)
            ids[i, :len(p)] = torch.tensor(p)
            ids[i, len(p):len(s)] = GENERATED
        return TokenRoles(ids, T)


def optimizer_step(opt, loss, params, ema: float | None) -> float:
    """One training step of every stage (vision, a recipe's text stage, the main stage): gradients of ``loss``,
    clipped to norm 1 over ``params``, the optimizer's update; -> the running mean of the loss (EMA 0.98) for the
    progress bar."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    value = loss.item()
    return value if ema is None else 0.98 * ema + 0.02 * value


def per_sample_loss(logits, labels):
    """Mean CE over each sample's target tokens, then mean over samples. logits [B, T, V], labels [B, T]."""
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                         ignore_index=-100, reduction="none").view(shift_labels.shape)
    mask = (shift_labels != -100).float()
    return ((ce * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def forward_loss(model, batch, share_prefix: bool = True, probe=None, tap=None,
                 aux_weight: float = 0.0, knockouts=None, events=None, event_weight: float = 0.0,
                 question=None, question_weight: float = 0.0):
    """Per-sample loss of a training batch (``labels`` inside ``batch``), plus ``aux_weight`` times the token-probe
    loss when ``probe`` and ``tap`` are given, plus ``event_weight`` times the event probe's loss on a clip batch
    when ``events`` = (event probe, ``video.EventTap``) is given, plus ``question_weight`` times the question probe's
    loss when ``question`` = (question probe, ``probe.AnswerTap``) is given and the batch has ``question_targets``.
    ``knockouts`` (per-row lists, ``vlmflow.plant.sample_rows``) apply through the registered attention function over
    the batch's ``roles``; the model's language model must run the ``"vlmflow"`` attention (``vlmflow.model.wrap``
    sets it).

    With ``share_prefix`` the text before the image (BOS + system prompt + ``USER:``, ~30% of every sequence and
    identical across the batch) runs once, and its keys/values are broadcast to the batch as a DynamicCache
    that gradients flow through. Under causal attention this gives the same loss and gradients as the plain
    forward (tests/unit/test_toy_model.py checks it) for ~20% less compute per step."""
    batch = dict(batch)
    labels = batch.pop("labels")
    targets = batch.pop("token_targets", None)
    hidden = batch.pop("hidden", None)
    roles = batch.pop("roles", None)
    event_targets = batch.pop("event_targets", None)
    asked = batch.pop("question_targets", None)
    lm_loss = _lm_loss(model, batch, labels, share_prefix, hidden, roles, knockouts)
    if question is not None and question_weight and asked is not None:
        question_probe, answer_tap = question
        lm_loss = lm_loss + question_weight * question_probe.loss(answer_tap.take(labels), asked)
    if events is not None and event_weight and event_targets is not None:
        event_probe, event_tap = events
        features = event_tap.take(batch["input_ids"], model.config.video_token_id)
        targets_of_heads = event_targets[:, :len(event_probe.heads), :features.shape[1]]
        lm_loss = lm_loss + event_weight * event_probe.loss(features, targets_of_heads)
    if probe is None or tap is None or aux_weight == 0 or targets is None:
        return lm_loss
    return lm_loss + aux_weight * probe.loss(tap.take(), targets)


def _knockout_context(model, roles, knockouts):
    """``attention.active`` over the batch's roles with ``knockouts``, or a no-op context without any."""
    from contextlib import nullcontext

    from vlmflow.attention import active

    if not knockouts or not any(knockouts):
        return nullcontext()
    if roles is None:
        raise TrainingError("knockouts in training need the batch's token roles (Batcher with an adapter)")
    return active(roles, knockouts, None, n_layers=model.config.text_config.num_hidden_layers)


def _lm_loss(model, batch, labels, share_prefix: bool, hidden=None, roles=None, knockouts=None):
    ko_context = _knockout_context(model, roles, knockouts)
    ids = batch["input_ids"]
    visible = batch["attention_mask"] if hidden is None else batch["attention_mask"] * ~hidden
    if not share_prefix:
        batch = {**batch, "attention_mask": visible}
        with ko_context:
            return per_sample_loss(model(**batch).logits, labels)
    is_img = ids == model.config.image_token_id
    P = int(is_img[0].nonzero()[0, 0])  # first image position
    if not torch_equal_rows(ids[:, :P]) or not bool(batch["attention_mask"][:, :P].all()):
        raise TrainingError("share_prefix needs a right-padded batch whose text before <image> is identical")
    if not torch_equal_rows(visible[:, :P]):
        raise TrainingError("share_prefix needs the same hidden positions before <image> in every sample")
    sources = frozenset().union(*(k.source_roles for row in knockouts or [] for k in row))
    if sources - {"image", "query", "assistant", "generated"}:
        raise TrainingError("share_prefix runs the text before <image> without knockouts: a knockout whose source "
                            "is bos, system or user text needs share_prefix=False")
    B = ids.shape[0]
    # the prefix holds no knockout source (checked above), so it runs plain; the rest under the knockouts
    prefix_kw, rest_kw = split_extras(batch, P)  # M-RoPE positions and token types (toy/architectures.py)
    prefix = model(input_ids=ids[:1, :P], attention_mask=visible[:1, :P], use_cache=True, **prefix_kw)
    cache = prefix.cache
    for layer in cache.layers:
        layer.keys = layer.keys.expand(B, -1, -1, -1)
        layer.values = layer.values.expand(B, -1, -1, -1)
    with ko_context:
        out = model(input_ids=ids[:, P:], pixel_values=batch["pixel_values"], attention_mask=visible,
                    cache=cache, use_cache=True, **rest_kw)
    # position P-1 predicts the first image token, which is never a target, so dropping it loses nothing
    return per_sample_loss(out.logits, labels[:, P:])


def hidden_context(batch, image_token_id: int, p: float, generator, system: slice | None = None) -> "torch.Tensor":
    """bool [B, T]: the positions that the context curriculum hides from every token of this step: each background
    image token (no object under it, ``token_targets``) with probability ``p``, and, for the whole batch with
    probability ``p``, the system prompt (the tokens between BOS and ``USER:``; one draw per batch, so the prefix
    that ``forward_loss`` shares stays one sequence; ``system`` names those positions for another architecture,
    ``toy/architectures.py``). Positions stay as they are (only the attention
    mask changes), so every token keeps its rotary position when the context returns.

    Why: a balanced yes/no question has no answer signal in the question or the image alone, and at initialisation
    the answer token averages ~110 positions; a text-only analogue of the toy LM (an object among N filler tokens,
    ``is there a <colour> <shape> ?``) learned in ~200 steps with 8 fillers and sat at chance with 60."""
    import torch

    ids = batch["input_ids"]
    is_img = ids == image_token_id
    background = batch["token_targets"][:, 0] == 0  # [B, N] in the row-major order of the image tokens
    if not bool((is_img.sum(1) == background.shape[1]).all()):
        raise TrainingError("hidden_context: every sample needs exactly one image's tokens")
    hidden = torch.zeros_like(is_img)
    hidden[is_img] = (background & (torch.rand(background.shape, generator=generator) < p)).reshape(-1)
    first_image = int(is_img[0].nonzero()[0, 0])
    if float(torch.rand((), generator=generator)) < p:
        hidden[:, slice(1, first_image - 2) if system is None else system] = True  # keep BOS (sink) and "USER :"
    return hidden


def hide_probability(frac: float, until: float) -> float:
    """Context curriculum: hide probability 1 at the start, falling linearly to 0 at ``until`` of the schedule."""
    return max(0.0, 1.0 - frac / until) if until > 0 else 0.0


def torch_equal_rows(x) -> bool:
    return bool((x == x[:1]).all())


def make_batch(step: int, cfg: TrainConfig, batcher: Batcher, split: str = "train",
               scenes: SceneConfig | None = None):
    """Training batch ``step``: Batcher tensors plus ``token_targets`` [B, heads, grid*grid] for the token probe (and,
    with ``cfg.probe_question``, ``question_targets`` [B, 2, 1] for the question probe)."""
    import torch

    from vlmflow.toy.probe import question_targets, token_targets

    scenes = scenes or cfg.scenes
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 11, step]))
    kinds = list(cfg.kind_mix)
    p = np.array([cfg.kind_mix[k] for k in kinds])
    images, qas, targets = [], [], []
    heads = cfg.probe_heads
    for i in range(cfg.batch_size):
        sc = make_scene(cfg.seed, split, step * cfg.batch_size + i, scenes)
        qa = sample_question(sc, kinds[int(rng.choice(len(kinds), p=p / p.sum()))], rng, cfg.exists_negatives)
        images.append(sc.image)
        qas.append(qa)
        targets.append(token_targets(sc, cfg.model.grid, heads))
    batch = batcher(images, qas)
    batch["token_targets"] = torch.from_numpy(np.stack(targets))
    if cfg.probe_question is not None:
        batch["question_targets"] = torch.from_numpy(question_targets([qa.question for qa in qas]))
    return batch


VISION_INDEX_OFFSET = 2 ** 40  # stage-1 scenes come from the train split far past anything stage 2 draws


def pretrain_vision(model, processor, probe, cfg: TrainConfig, log=print) -> dict:
    """Stage 1: train the CLIP tower + projector + probe on token targets for ``cfg.vision_minutes`` (or
    ``cfg.vision_steps``). Returns the final running loss and the probe's per-head accuracy and word cosine on object
    tokens (the last batch)."""
    import torch
    from tqdm import tqdm

    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.probe import token_targets

    arch = get_arch(cfg.arch)
    params = [*arch.vision_parameters(model), *probe.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    tap = arch.tap(model, cfg.model.grid ** 2)
    heads = cfg.probe_heads
    t0 = time.time()
    deadline = t0 + cfg.vision_minutes * 60
    step, ema, acc = 0, None, {}
    bar = tqdm(total=cfg.vision_steps, desc="toy vision pretrain", mininterval=10)
    try:
        while (step < cfg.vision_steps) if cfg.vision_steps is not None else (time.time() < deadline):
            f = min(1.0, (step + 1) / cfg.warmup_steps)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * f
            scenes = [make_scene(cfg.seed, "train", VISION_INDEX_OFFSET + step * cfg.batch_size + i, cfg.scenes)
                      for i in range(cfg.batch_size)]
            image_inputs = arch.image_inputs(processor, [s.image for s in scenes])
            targets = torch.from_numpy(np.stack([token_targets(s, cfg.model.grid, heads) for s in scenes]))
            arch.image_features(model, image_inputs)
            features = tap.take()
            loss = probe.loss(features, targets)
            ema = optimizer_step(opt, loss, params, ema)
            step += 1
            acc = probe.object_token_accuracy(features, targets)
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", shape=f"{acc['shape']:.2f}", refresh=False)
    finally:
        tap.remove()
        bar.close()
    cosine = probe.object_token_cosine(features, targets) if step else {}  # the last batch, as acc
    margin = probe.object_token_margin(features, targets) if step else {}
    result = {"steps": step, "loss": round(ema or float("nan"), 4),
              "object_token_accuracy": {k: round(a, 3) for k, a in acc.items()},
              "object_token_cosine": {k: round(c, 3) for k, c in cosine.items()},
              "object_token_margin": {k: round(m, 3) for k, m in margin.items()}}
    log("vision pretraining " + json.dumps(result))
    return result


def mimetic_init(model, self_score: float = 4.0, seed: int = 0) -> None:
    """Mimetic initialisation of the language model's attention (Trockman & Kolter, 2023): per head ``W_k = W_q``
    (plus small noise), Gaussian with the scale that gives a token's RMS-normalised residual a pre-softmax score of
    about ``self_score`` against itself. At initialisation a query then prefers keys that resemble it, so a question
    word finds the image tokens that the token probe aligned with that word, instead of averaging the sequence. In
    the text-only analogue (``diagnostics/yesno_context_length.py``, 60 copies of one filler token) only the mimetic
    start left chance within 300 steps."""
    import torch

    g = torch.Generator().manual_seed(seed)
    text = getattr(model.config, "text_config", model.config)  # a LLaVA model or a bare causal LM
    decoder = getattr(model.model, "language_model", model.model)
    head_dim = text.hidden_size // text.num_attention_heads
    sigma = math.sqrt(self_score / (math.sqrt(head_dim) * text.hidden_size))
    with torch.no_grad():
        for layer in decoder.layers:
            q, k = layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight
            if q.shape != k.shape:
                raise TrainingError("mimetic_init needs as many key/value heads as query heads")
            w = torch.randn(q.shape, generator=g) * sigma
            q.copy_(w)
            k.copy_(w + torch.randn(k.shape, generator=g) * 0.02)


class FixedRows:
    """Keeps the embedding rows of ``words`` (input and, when untied, output) at the values they have when made:
    ``restore()`` after every optimizer step undoes the step's update and weight decay on those rows.

    Why (``TrainConfig.fixed_words``): a fixed readout for the yes/no answer. While the answer position's state
    ``h`` carries no information about the label, cross-entropy on balanced yes/no labels is lowest with equal
    logits for every ``h``, so its gradient pulls ``e_yes - e_no`` toward zero along the states; the gradient that
    the yes/no loss sends into the network, ``(p_yes - y) (e_yes - e_no)``, vanishes with it, and the circuit that
    would answer is never reinforced. Every toy run whose yes/no accuracy stayed at exactly chance ended with the
    tied ``yes`` and ``no`` rows at cosine 1.00 (``diagnostics/readout_collapse.py``). With the two rows fixed at
    their random start, the difference, and the gradient, stay."""

    def __init__(self, model, tokenizer, words):
        import torch

        ids = []
        for w in words:
            i = tokenizer.convert_tokens_to_ids(w)
            if i is None or i == tokenizer.unk_token_id:
                raise TrainingError(f"fixed_words: {w!r} is not a word of the model's vocabulary")
            ids.append(i)
        self.ids = torch.tensor(ids, dtype=torch.long)
        inputs, outputs = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        self.tables = [inputs] if outputs is inputs else [inputs, outputs]  # tied embeddings: one table
        self.rows = [t.detach()[self.ids].clone() for t in self.tables]

    def restore(self) -> None:
        import torch

        with torch.no_grad():
            for table, rows in zip(self.tables, self.rows):
                table[self.ids] = rows


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _atomic_save(obj, path: Path) -> None:
    import torch

    from vlmflow.atomic import atomic_write

    atomic_write(path, lambda f: torch.save(obj, f))


def export(model, processor, out: str | os.PathLike, *, half: bool = True, extra: dict | None = None,
           plant=None) -> Path:
    """Save a copy of the model (fp16 by default) and its processor with save_pretrained, atomically per folder;
    ``plant`` (a ``vlmflow.plant.Plant``) is written as the folder's ``plant.json``, applied by ``vf.load``."""
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
    if plant is not None:
        from vlmflow.plant import write_plant

        write_plant(tmp, plant)
    keep = out / "MODEL_CARD.md"
    if keep.exists():
        shutil.copy(keep, tmp / "MODEL_CARD.md")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def _resume(ckpt_path: Path, cfg: TrainConfig, model, probe, opt, log, event_probe=None,
            question_probe=None) -> dict:
    """Load a checkpoint into model, probe (and event and question probes) and optimizer; -> the loop state it saved
    (step, total_steps, elapsed, history, vision)."""
    import torch

    if not ckpt_path.exists():
        raise TrainingError(f"--resume: no checkpoint at {ckpt_path}")
    state = torch.load(ckpt_path, weights_only=False)
    if state.get("arch", "llava") != cfg.arch:
        raise TrainingError(f"--resume: {ckpt_path} holds a {state.get('arch', 'llava')} toy, not {cfg.arch}")
    from vlmflow.toy.model import ToyModelConfig

    saved_model = ToyModelConfig.recorded(state["model_config"])
    if saved_model != cfg.model.to_dict():
        raise TrainingError(f"--resume: {ckpt_path} was trained with model config {saved_model}")
    from vlmflow.toy.probe import HEADS

    saved = state.get("probe_heads", [name for name, _ in HEADS])  # checkpoints older than the field: content heads
    if saved != cfg.probe_head_names:
        raise TrainingError(f"--resume: {ckpt_path} holds a token probe with heads {saved}, this run's has "
                            f"{cfg.probe_head_names} (--probe-position must match the run's)")
    if state.get("probe_scale") != cfg.probe_scale:
        raise TrainingError(f"--resume: {ckpt_path} was trained with the token probe's scale "
                            f"{state.get('probe_scale') or 'learned'}, this run's is {cfg.probe_scale or 'learned'} "
                            f"(--probe-scale must match the run's)")
    if (state.get("event_probe") is None) != (event_probe is None):
        raise TrainingError(f"--resume: {ckpt_path} was trained {'without' if event_probe else 'with'} the event "
                            f"probe (--probe-events must match the run's)")
    if event_probe is not None:
        saved_heads = len(state["event_probe"]["background"])
        if saved_heads != len(event_probe.heads):
            raise TrainingError(f"--resume: {ckpt_path} holds an event probe with {saved_heads} heads, this run's "
                                f"has {len(event_probe.heads)} (--event-attributes and --event-places must match the run's)")
    if state.get("probe_question") != cfg.probe_question:
        raise TrainingError(f"--resume: {ckpt_path} was trained with the question probe at layer "
                            f"{state.get('probe_question')}, this run's is at {cfg.probe_question} (--probe-question "
                            f"must match the run's)")
    model.load_state_dict(state["model"])
    probe.load_state_dict(state["probe"])
    if event_probe is not None:
        event_probe.load_state_dict(state["event_probe"])
    if question_probe is not None:
        question_probe.load_state_dict(state["question_probe"])
    opt.load_state_dict(state["optimizer"])
    log(f"resumed from {ckpt_path} at step {state['step']} / {state['total_steps']}")
    return {"step": state["step"], "total": state["total_steps"], "elapsed": state.get("elapsed", 0.0),
            "history": state.get("history", []), "vision": state.get("vision"), "prepared": state.get("prepared")}


def _schedule(cfg: TrainConfig, step: int, total: int | None, elapsed: float,
              elapsed_before: float) -> tuple[float, float]:
    """(fraction of the schedule done, learning-rate factor) at ``step``; ``elapsed`` seconds trained so far, of
    which ``elapsed_before`` before this run (resumed). Without ``cfg.steps`` the schedule runs on wall-clock time:
    robust to the shared CPU slowing down mid-run (the budget always ends the decay)."""
    if cfg.steps is None:
        frac = elapsed / (elapsed_before + cfg.minutes * 60)
        f = lr_factor(int(frac * 10 ** 6), 10 ** 6, 0, cfg.min_lr_ratio)
        return frac, f * min(1.0, (step + 1) / cfg.warmup_steps)
    return step / total, lr_factor(step, total, cfg.warmup_steps, cfg.min_lr_ratio)


def _held_out(model, processor, cfg: TrainConfig, events=None, question=None, **extra) -> dict:
    """Greedy held-out metrics on the val split (``quick_eval``; under the plant as it will ship; with ``events``,
    the event probe's recall per class, ``video.event_probe_recall``; with ``question``, the question probe's
    accuracy, ``question_probe_accuracy``), the model back in training mode afterwards."""
    from vlmflow.toy.evaluate import quick_eval

    model.eval()
    metrics = quick_eval(model, processor, n=cfg.eval_scenes, seed=cfg.seed, split="val", scene_config=cfg.scenes,
                         plant=shipped_plant(cfg))
    if cfg.clip_fraction > 0:
        from vlmflow.model import wrap
        from vlmflow.toy.clips import ClipConfig
        from vlmflow.toy.video import clip_eval

        metrics.update(clip_eval(wrap(model, processor), n=cfg.eval_scenes, seed=cfg.seed, split="val",
                                 config=ClipConfig(scene=cfg.scenes)))
        if events is not None:
            from vlmflow.toy.video import ClipBatcher, event_probe_recall

            batcher = ClipBatcher(model, processor, ClipConfig(scene=cfg.scenes))
            metrics.update(event_probe_recall(model, events, batcher, n=cfg.eval_scenes, seed=cfg.seed))
    if question is not None:
        from vlmflow.toy.architectures import get_arch

        metrics.update(question_probe_accuracy(model, question, Batcher(processor, get_arch(cfg.arch), model), cfg))
    model.train()
    metrics.update(extra)
    return metrics


def training_plant(cfg: TrainConfig):
    """The ``vlmflow.plant.Plant`` trained into the model (None without ``cfg.plant``)."""
    from vlmflow.plant import preset

    return preset(cfg.plant, cfg.plant_probability) if cfg.plant else None


def shipped_plant(cfg: TrainConfig):
    """The plant the exported model carries at inference: a hard plant (probability 1) only; a soft one is absent."""
    plant = training_plant(cfg)
    return plant if plant is not None and plant.probability >= 1 else None


def base_record(init: str | None) -> dict | None:
    """The training record (training.json) of the model folder that ``--init`` continues, None without one: a
    continued model's own training.json keeps it under ``base``, so its card can give the whole training."""
    if init is None or not (Path(init) / "training.json").is_file():
        return None
    return json.loads((Path(init) / "training.json").read_text())


def _lm_layer(model, layer: int, flag: str) -> int:
    """``layer`` if the model's language model has it, else a TrainingError naming ``flag`` and the valid range."""
    n_layers = len(model.model.language_model.layers)
    if not 0 <= layer < n_layers:
        raise TrainingError(f"{flag} {layer}: no such language-model layer (0..{n_layers - 1})")
    return layer


def event_probe_of(cfg: TrainConfig, model, processor):
    """The event probe of a run with ``cfg.probe_events`` (a ``TokenProbe`` with ``video.event_heads``: the verbs'
    own embeddings as class vectors, as the token probe uses the object words; with ``cfg.event_attributes`` also
    the changed object's words, with ``cfg.event_places`` also a move's new row and column), None otherwise; it
    reads clips, so it needs clip steps."""
    if cfg.event_places and not cfg.event_attributes:
        raise TrainingError("--event-places follows the event attribute heads: it needs --event-attributes")
    if cfg.probe_events is None:
        if cfg.event_attributes:
            raise TrainingError("--event-attributes adds heads to the event probe: it needs --probe-events LAYER")
        return None
    if cfg.clip_fraction <= 0:
        raise TrainingError(f"--probe-events {cfg.probe_events} reads clips: it needs --clips above 0")
    _lm_layer(model, cfg.probe_events, "--probe-events")
    from vlmflow.toy.probe import TokenProbe
    from vlmflow.toy.video import event_heads

    # balanced: a changed object covers a few of a frame's tokens, and a plain mean let the probe answer "nothing
    # changed" everywhere (1.00 / 0.02 on unchanged / changed tokens after 370 steps)
    return TokenProbe(model, processor.tokenizer, cosine=cfg.probe_cosine,
                      heads=event_heads(cfg.event_attributes, cfg.event_places), balanced=True)


def question_probe_of(cfg: TrainConfig, model, processor):
    """The question probe of a run with ``cfg.probe_question`` (a ``TokenProbe`` with ``probe.QUESTION_HEADS``, read
    at the answer position by ``probe.AnswerTap``), None otherwise. Balanced: a batch of descriptions and counts names
    no shape, and a head with nothing to name adds nothing."""
    if cfg.probe_question is None:
        return None
    _lm_layer(model, cfg.probe_question, "--probe-question")
    from vlmflow.toy.probe import QUESTION_HEADS, TokenProbe

    return TokenProbe(model, processor.tokenizer, cosine=cfg.probe_cosine, heads=QUESTION_HEADS, balanced=True)


def question_probe_accuracy(model, question, batcher: Batcher, cfg: TrainConfig) -> dict[str, float]:
    """``question_probe_acc_<head>``: the share of ``cfg.eval_scenes`` val questions (one per scene, drawn as in
    training) naming the head's word whose answer position the question probe reads right; ``question`` = (question
    probe, ``probe.AnswerTap``)."""
    from dataclasses import replace

    import torch

    probe, tap = question
    batch = make_batch(0, replace(cfg, batch_size=cfg.eval_scenes), batcher, split="val")
    asked, labels = batch.pop("question_targets"), batch.pop("labels")
    batch.pop("token_targets")
    with torch.no_grad():
        model(**batch)
        features = tap.take(labels)
        out = {}
        for k, (name, _) in enumerate(probe.heads):
            named = asked[:, k, 0] > 0
            if named.any():  # a head no val question names gets no number
                right = probe.logits(features[:, 0], k).argmax(-1) == asked[:, k, 0]
                out[f"question_probe_acc_{name}"] = round(float(right[named].float().mean()), 4)
    return out


def initial_model(cfg: TrainConfig):
    """(model, processor) to train: ``cfg.init``'s folder in float32, or a new model of ``cfg.arch``
    (``toy/architectures.py``, mimetic start). A continued model takes ``cfg.model.rope_theta`` (the CLI's
    ``--init`` starts ``cfg.model`` from the folder's recorded model config)."""
    import torch

    from vlmflow.toy.architectures import get_arch, set_rope_theta

    if cfg.init:
        from transformers import AutoModelForImageTextToText

        from vlmflow.processors import load_processor

        if not (Path(cfg.init) / "config.json").is_file():
            raise TrainingError(f"--init {cfg.init}: no model folder there (no config.json)")
        model = AutoModelForImageTextToText.from_pretrained(cfg.init, dtype=torch.float32, local_files_only=True)
        set_rope_theta(model, cfg.model.rope_theta)
        return model, load_processor(cfg.init, local_files_only=True)
    model, processor = get_arch(cfg.arch).build(cfg.model, seed=cfg.seed)
    if cfg.mimetic:
        mimetic_init(model, seed=cfg.seed)
    return model, processor


def train(cfg: TrainConfig, out: str | os.PathLike, work: str | os.PathLike, resume: bool = False,
          log=print, command: str | None = None, prepare=None) -> dict:
    """Both stages (see the module docstring) within ``cfg``'s budget, checkpointing to ``work`` (``resume``
    continues from its checkpoint) and exporting the fp16 model to ``out``; -> {"step", "history"}.

    ``prepare(model, processor, fresh) -> dict | None`` (a training recipe, ``toy/recipes.py``) runs on the built
    model before the optimizer exists: it may freeze or load weights and, when ``fresh`` (not resuming), run a stage
    of its own; what it returns is checkpointed (never repeated on ``--resume``) and exported as ``prepared``.
    With ``cfg.clock == "process"`` every budget of the main stage counts this process's CPU time, not wall time.

    Over 60 lines because it is the training loop itself: one state (model, probe, optimizer, step, schedule,
    timers) that the checkpoint closure saves; every job inside the loop is a helper (``_schedule``, ``make_batch``,
    ``hidden_context``, ``forward_loss``, ``_held_out``, ``export``)."""
    import torch
    from tqdm import tqdm

    from vlmflow.model import wrap
    from vlmflow.plant import sample_rows
    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.probe import AnswerTap, TokenProbe
    from vlmflow.toy.video import EventTap, clip_batch_size, clip_training, is_clip_step, make_clip_batch

    arch = get_arch(cfg.arch)
    torch.set_num_threads(cfg.threads)
    clock = {"wall": time.time, "process": time.process_time}.get(cfg.clock)
    if clock is None:
        raise TrainingError(f"TrainConfig.clock must be 'wall' or 'process', got {cfg.clock!r}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path = work / "checkpoint.pt"
    model, processor = initial_model(cfg)
    base = base_record(cfg.init)
    prepared = prepare(model, processor, not resume) if prepare is not None else None
    plant = training_plant(cfg)
    adapter = wrap(model, processor).adapter if plant is not None else None  # the "vlmflow" attention on the LM
    probe = TokenProbe(model, processor.tokenizer, cosine=cfg.probe_cosine, heads=cfg.probe_heads,
                       scale=cfg.probe_scale)
    event_probe = event_probe_of(cfg, model, processor)
    question_probe = question_probe_of(cfg, model, processor)
    opt = torch.optim.AdamW([*model.parameters(), *probe.parameters(),
                             *(event_probe.parameters() if event_probe is not None else []),
                             *(question_probe.parameters() if question_probe is not None else [])],
                            lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    state = {"step": 0, "total": cfg.steps, "elapsed": 0.0, "history": [], "vision": None}
    if resume:
        state = _resume(ckpt_path, cfg, model, probe, opt, log, event_probe, question_probe)
        prepared = state.get("prepared")
    step, total, elapsed_before, history, vision = (state[k] for k in ("step", "total", "elapsed", "history", "vision"))
    batcher = Batcher(processor, arch, model, adapter=adapter)
    clip_batcher = clip_training(cfg, model, processor)
    fixed = FixedRows(model, processor.tokenizer, cfg.fixed_words) if cfg.fixed_words else None  # after resume
    model.train()

    def checkpoint():
        _atomic_save({"model": model.state_dict(), "probe": probe.state_dict(), "optimizer": opt.state_dict(),
                      "event_probe": None if event_probe is None else event_probe.state_dict(),
                      "question_probe": None if question_probe is None else question_probe.state_dict(),
                      "probe_question": cfg.probe_question,
                      "step": step, "total_steps": total, "model_config": cfg.model.to_dict(), "seed": cfg.seed,
                      "arch": cfg.arch, "probe_heads": cfg.probe_head_names, "probe_scale": cfg.probe_scale,
                      "elapsed": elapsed_before + clock() - t0, "history": history,
                      "vision": vision, "prepared": prepared}, ckpt_path)

    if vision is None and (cfg.vision_minutes > 0 or cfg.vision_steps):
        vision = pretrain_vision(model, processor, probe, cfg, log=log)
        t0 = clock()
        checkpoint()  # stage 1 is never repeated on --resume
    elif prepared is not None and not resume:
        t0 = clock()
        checkpoint()  # nor is a recipe's own stage
    tap = arch.tap(model, cfg.model.grid ** 2)
    events = None if event_probe is None else (event_probe, EventTap(model, cfg.probe_events))
    question = None if question_probe is None else (question_probe, AnswerTap(model, cfg.probe_question))
    t0 = clock()
    deadline = t0 + cfg.minutes * 60
    last_ckpt = last_eval = t0
    ema = None
    last_cap = None

    bar = tqdm(total=total, initial=step, desc="toy train", mininterval=10, smoothing=0.05)
    while cfg.steps is None or step < cfg.steps:
        if clock() > deadline:
            log(f"{cfg.clock} budget of {cfg.minutes} min reached at step {step}")
            break
        frac, f = _schedule(cfg, step, total, elapsed_before + clock() - t0, elapsed_before)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * f
        scenes = cfg.scenes_at(frac)
        if scenes.max_objects != last_cap:
            log(f"step {step}: scenes with {scenes.min_objects}-{scenes.max_objects} objects (curriculum)")
            last_cap = scenes.max_objects
        clips = clip_batcher is not None and is_clip_step(cfg.seed, step, cfg.clip_fraction)
        batch = (make_clip_batch(step, cfg.seed, clip_batch_size(cfg.batch_size), clip_batcher) if clips
                 else make_batch(step, cfg, batcher, scenes=scenes))
        p_hide = 0.0 if clips else hide_probability(frac, cfg.hide_until)
        if p_hide > 0:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            batch["hidden"] = hidden_context(batch, model.config.image_token_id, p_hide, g,
                                             system=arch.system_span(processor))
        knockouts = None
        if plant is not None and not clips:  # clip batches carry no roles; a plant trains on still scenes
            knockouts = sample_rows(plant, cfg.batch_size, torch.Generator().manual_seed(cfg.seed * 1_000_033 + step))
        loss = forward_loss(model, batch, share_prefix=cfg.share_prefix and not clips, probe=probe, tap=tap,
                            aux_weight=cfg.aux_weight, knockouts=knockouts, events=events if clips else None,
                            event_weight=cfg.event_weight, question=question, question_weight=cfg.question_weight)
        ema = optimizer_step(opt, loss, model.parameters(), ema)
        if fixed is not None:
            fixed.restore()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.2e}", refresh=False)
        if total is None and step == 30:
            rate = (clock() - t0) / step
            total = step + int((deadline - clock()) / rate)
            bar.total = total
            log(f"{rate:.3f} s/step -> about {total} steps in {cfg.minutes} min (time-based cosine schedule)")
        now = clock()
        if now - last_eval > cfg.eval_minutes * 60:
            history.append(_held_out(model, processor, cfg, events, question, step=step, loss=round(ema, 4),
                                     minutes=round((elapsed_before + now - t0) / 60, 1)))
            log("eval " + json.dumps(history[-1]))
            last_eval = clock()
        if now - last_ckpt > cfg.checkpoint_minutes * 60:
            checkpoint()
            export(model, processor, work / "latest", half=False)
            last_ckpt = clock()
    bar.close()
    tap.remove()
    checkpoint()
    history.append(_held_out(model, processor, cfg, events, question, step=step, loss=round(ema or float("nan"), 4),
                             minutes=round((elapsed_before + clock() - t0) / 60, 1)))
    for held in (events, question):
        if held is not None:
            held[1].remove()
    model.eval()
    log("final eval " + json.dumps(history[-1]))
    export(model, processor, out, half=True,
           extra={"train_config": {k: v for k, v in cfg.__dict__.items() if k not in ("model", "scenes")},
                  "model_config": cfg.model.to_dict(), "scene_config": cfg.scenes.__dict__,
                  "kind_mix": cfg.kind_mix, "vision_pretraining": vision, "command": command, "steps": step,
                  "total_steps": total, "history": history, "prepared": prepared, "base": base,
                  "plant": None if plant is None else plant.to_dict()},
           plant=shipped_plant(cfg))
    log(f"exported to {out}")
    return {"step": step, "history": history}
