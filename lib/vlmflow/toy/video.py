"""Toy clips (``toy/clips.py``) as Qwen2-VL video input, for training and evaluating the toy Qwen2-VL on clips.

A clip enters the model through Qwen2-VL's own video path (``pixel_values_videos``, ``video_grid_thw``, temporal
patches, M-RoPE time axis), never as a row of separate images: ``adapters.qwen2_vl.video_inputs`` with one clip
frame per temporal patch, so video token ``k`` shows frame ``k // 64`` at 128 px and a knockout can name frames.
The prompt is the core adapter's (``Qwen2VLAdapter.prepare_video``: the image prompt with ``<|video_pad|>`` in the
image's place), so a trained model answers through ``vf.load`` with the prompt it was trained on.

- :func:`sample_clip_question`: one training question of a kind (``CLIP_KIND_MIX``) from ``clips.clip_questions``;
- :class:`ClipBatcher`: clips + questions -> right-padded training tensors (labels = answer + EOS), with
  ``mm_token_type_ids`` and the M-RoPE ``position_ids`` of the full context (``toy/architectures.py`` says why);
  ``train.forward_loss(model, batch, share_prefix=False)`` trains on it;
- :func:`event_token_targets` and :class:`EventTap`: the event probe (``TrainConfig.probe_events``), which asks a
  middle layer of the language model to name, at every video token of frame ``k``, the change that frame ``k - 1``
  -> ``k`` made there (``appears`` ... ``turns``); the vision tower attends within one frame only (Qwen2-VL's
  ``cu_seqlens`` split the video per temporal patch), so frames can be compared only in the language model. With
  ``TrainConfig.event_attributes`` the same tokens must also name the changed object (its shape, colour and size
  before the change: the words of the event's clause), so a clause can find the changed object by its words; with
  ``TrainConfig.event_places`` a move's tokens in its new cells must also name the place the clause ends with (its
  row and column words);
- :func:`clip_eval`: greedy clip descriptions of held-out clips through ``VLM.generate_batch``, scored with
  ``clips.score_clip`` (fact F1) and ``clips.recall_by_family`` (which facts are missed), plus the count-at-end accuracy.
"""
from __future__ import annotations

import math

import numpy as np

from vlmflow.toy.clips import (
    COUNT_AT_END_QUESTION,
    DESCRIBE_VIDEO_PROMPT,
    EVENT_KINDS,
    EVENT_VERBS,
    ClipConfig,
    clip_facts,
    clip_questions,
    make_clip,
    parse_clip,
    recall_by_family,
    score_clip,
)
from vlmflow.toy.probe import HEADS, IGNORED, POSITION_HEADS, LayerTap
from vlmflow.toy.questions import QA
from vlmflow.toy.scenes import covered_tokens, position_axes

# The question kinds of clip training and how often each is drawn (describing carries most of the facts).
CLIP_KIND_MIX = {"describe_video": 0.5, "appear": 0.1, "disappear": 0.1, "move": 0.1, "recolor": 0.1,
                 "count_at_end": 0.1}


def sample_clip_question(clip, rng: np.random.Generator) -> QA:
    """One question about ``clip`` of a kind drawn with ``CLIP_KIND_MIX``, with its exact answer."""
    kinds = list(CLIP_KIND_MIX)
    p = np.array([CLIP_KIND_MIX[k] for k in kinds])
    kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
    qa = next(q for q in clip_questions(clip) if q["kind"] == kind)
    return QA(kind, qa["question"], qa["answer"])


# The event probe's first head: the verb of each event kind, in EVENT_KINDS order (class k + 1 = EVENT_KINDS[k]).
EVENT_HEADS = (("event", tuple(EVENT_VERBS[k] for k in EVENT_KINDS)),)
# With TrainConfig.event_attributes, the changed object's words as the clause names them (``Event.object``: as it
# was before the change), at the event's tokens only: the token probe's heads (shape, colour, size).
EVENT_ATTRIBUTE_HEADS = HEADS
# With TrainConfig.event_places as well, the place a move's clause ends with ("moves to the bottom right": bottom,
# right), at the moved object's tokens in its new cells only: the token probe's position heads (row, column).
EVENT_PLACE_HEADS = POSITION_HEADS


def event_heads(attributes: bool = False, places: bool = False):
    """The event probe's heads: ``EVENT_HEADS``, then ``EVENT_ATTRIBUTE_HEADS`` with ``attributes``, then
    ``EVENT_PLACE_HEADS`` with ``places`` (which needs ``attributes``: the heads are the clause's words in order, and
    a probe takes the first rows of ``event_token_targets``)."""
    if places and not attributes:
        raise ValueError("the event place heads follow the attribute heads: places=True needs attributes=True")
    return EVENT_HEADS + (EVENT_ATTRIBUTE_HEADS if attributes else ()) + (EVENT_PLACE_HEADS if places else ())


def event_token_targets(clip, grid: int) -> np.ndarray:
    """int64[len(event_heads(True, True)), n_frames * grid * grid], one row per head of ``event_heads(True, True)``;
    columns are the video tokens (frame-major, row-major within a frame, the order of the video tokens).
    Row 0: the class of the event that made frame ``k`` differ from frame ``k - 1`` at that token (1-based index in
    ``EVENT_KINDS``), 0 where nothing changed, ``IGNORED`` on frame 0. The event's cells are the changed object's
    tokens in frame ``k`` (appear, recolour, move's destination) and in frame ``k - 1`` (disappear, move's origin).
    Rows 1-3: the class of the changed object's shape / colour / size (1-based word index, as the token probe's) on
    the event's cells, ``IGNORED`` everywhere else. Rows 4-5: the class of the row / column word of a move's new
    place (``Event.position``) on the moved object's cells in frame ``k``, ``IGNORED`` everywhere else."""
    n = grid * grid
    out = np.full((len(event_heads(True, True)), len(clip.frames), n), IGNORED, dtype=np.int64)
    out[0, 1:] = 0
    for event in clip.events:
        label = EVENT_KINDS.index(event.kind) + 1
        word_classes = [words.index(getattr(event.object, head)) + 1 for head, words in EVENT_ATTRIBUTE_HEADS]
        place_classes = ([words.index(word) + 1 for (_, words), word in zip(EVENT_PLACE_HEADS,
                                                                           position_axes(event.position))]
                         if event.kind == "move" else [])
        for frame in (event.frame - 1, event.frame):
            for t in clip.frames[frame]:
                if t.track == event.track:
                    cells = covered_tokens(t.placed.mask, grid)
                    out[0, event.frame, cells] = label
                    named = word_classes + (place_classes if frame == event.frame else [])  # the new cells only
                    for k, word_class in enumerate(named, start=1):
                        out[k, event.frame, cells] = word_class
    return out.reshape(out.shape[0], -1)


class EventTap(LayerTap):
    """The event probe's tap (``LayerTap`` on layer ``layer``): ``take(input_ids, video_token_id)`` -> [B, N, hidden],
    row ``i`` holding its video tokens in order and zeros after them (their targets are ``IGNORED``)."""

    def take(self, input_ids, video_token_id: int):
        hidden, self.hidden = self.hidden, None
        is_video = input_ids == video_token_id
        out = hidden.new_zeros(hidden.shape[0], int(is_video.sum(1).max()), hidden.shape[-1])
        for i in range(hidden.shape[0]):
            rows = hidden[i, is_video[i]]
            out[i, :rows.shape[0]] = rows
        return out


def event_probe_recall(model, events, batcher: "ClipBatcher", n: int = 32, seed: int = 0, split: str = "val",
                       batch_size: int = 8) -> dict[str, float]:
    """Per class of the event probe (``none`` for unchanged tokens, then ``appears`` ... ``turns``), the share of
    frame-k video tokens of ``n`` held-out clips (rounded up to whole batches; one question each, as in training)
    that the probe names right; ``events`` = (event probe, ``EventTap``). A probe that says "nothing changed"
    everywhere scores 1.0 / 0.0. A probe with attribute heads (``event_heads(True)``) also gets
    ``event_attribute_acc_<head>``: the share of the tokens each head is asked about (the event tokens; a move's new
    cells for the place heads) that it names right."""
    import torch

    probe, tap = events
    n_classes = 1 + len(EVENT_HEADS[0][1])
    correct, total = torch.zeros(n_classes), torch.zeros(n_classes)
    attribute_heads = [name for name, _ in probe.heads[1:]]
    attr_correct, attr_total = torch.zeros(len(attribute_heads)), torch.zeros(len(attribute_heads))
    with torch.no_grad():
        for step in range(-(-n // batch_size)):
            batch = make_clip_batch(step, seed, batch_size, batcher, split=split)
            targets = batch.pop("event_targets")
            batch.pop("labels")
            model(**batch)
            features = tap.take(batch["input_ids"], model.config.video_token_id)
            targets = targets[:, :, :features.shape[1]]
            predicted = probe.logits(features, 0).argmax(-1)
            for c in range(n_classes):
                on = targets[:, 0] == c
                correct[c] += (predicted[on] == c).sum()
                total[c] += on.sum()
            for k in range(len(attribute_heads)):
                asked = targets[:, k + 1] > 0
                attr_total[k] += asked.sum()
                attr_correct[k] += (probe.logits(features, k + 1).argmax(-1) == targets[:, k + 1])[asked].sum()
    names = ("none", *EVENT_HEADS[0][1])
    out = {f"event_recall_{name}": round(float(correct[c] / total[c]), 4) for c, name in enumerate(names) if total[c]}
    out.update({f"event_attribute_acc_{name}": round(float(attr_correct[k] / attr_total[k]), 4)
                for k, name in enumerate(attribute_heads) if attr_total[k]})
    return out


class ClipBatcher:
    """Clips + QAs -> right-padded training tensors for a Qwen2-VL toy: ``input_ids``, ``attention_mask``,
    ``labels`` (-100 outside the answer + EOS), ``pixel_values_videos``, ``video_grid_thw``, ``mm_token_type_ids``,
    ``position_ids`` [3, B, T] and ``event_targets`` [B, heads, N] (``event_token_targets`` of each clip,
    right-padded with ``IGNORED``)."""

    def __init__(self, model, processor, config: ClipConfig | None = None):
        from vlmflow.adapters import adapter_for

        self.config = config or ClipConfig()  # the clips ``make_clip_batch`` draws by default
        self.model = model
        self.adapter = adapter_for(model, processor)
        self.tok = processor.tokenizer

    def prompt(self, frames, question: str):
        """(prompt ids, video inputs) of one clip as the adapter prepares it for inference."""
        inputs, _ = self.adapter.prepare_video([frames], [question])
        return inputs["input_ids"][0].tolist(), inputs

    def __call__(self, clips, qas) -> dict:
        import torch

        seqs, labels, videos = [], [], []
        for clip, qa in zip(clips, qas, strict=True):
            ids, inputs = self.prompt(clip.images, qa.question)
            answer = self.tok(qa.answer, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
            seqs.append(ids + answer)
            labels.append([-100] * len(ids) + answer)
            videos.append(inputs)
        B, T = len(seqs), max(len(s) for s in seqs)
        input_ids = torch.full((B, T), self.tok.pad_token_id, dtype=torch.long)
        label_t = torch.full((B, T), -100, dtype=torch.long)
        attn = torch.zeros((B, T), dtype=torch.long)
        for i, (s, lab) in enumerate(zip(seqs, labels)):
            input_ids[i, :len(s)], label_t[i, :len(s)], attn[i, :len(s)] = torch.tensor(s), torch.tensor(lab), 1
        video_id = self.model.config.video_token_id
        types = ((input_ids == video_id) & attn.bool()).to(torch.int32) * 2  # text 0, image 1, video 2
        grid = torch.cat([v["video_grid_thw"] for v in videos])
        with torch.no_grad():
            positions, _ = self.model.model.get_rope_index(input_ids, mm_token_type_ids=types, video_grid_thw=grid,
                                                           attention_mask=attn)
        per_frame = [int((input_ids[i] == video_id).sum()) // len(c.frames) for i, c in enumerate(clips)]
        events = [event_token_targets(c, math.isqrt(n)) for c, n in zip(clips, per_frame)]
        event_t = torch.full((B, events[0].shape[0], max(e.shape[1] for e in events)), IGNORED, dtype=torch.long)
        for i, e in enumerate(events):
            event_t[i, :, :e.shape[1]] = torch.from_numpy(e)
        return {"event_targets": event_t, "input_ids": input_ids, "attention_mask": attn, "labels": label_t,
                "pixel_values_videos": torch.cat([v["pixel_values_videos"] for v in videos]),
                "video_grid_thw": grid, "mm_token_type_ids": types, "position_ids": positions}


def make_clip_batch(step: int, seed: int, batch_size: int, batcher: ClipBatcher, split: str = "train",
                    config: ClipConfig | None = None) -> dict:
    """Clip training batch ``step``: clips ``step*B .. step*B+B-1`` of ``split``, one sampled question each."""
    config = config or batcher.config
    rng = np.random.default_rng(np.random.SeedSequence([seed, 13, step]))
    clips = [make_clip(seed, split, step * batch_size + i, config) for i in range(batch_size)]
    return batcher(clips, [sample_clip_question(c, rng) for c in clips])


def clip_eval(vlm, n: int = 50, seed: int = 0, split: str = "test", config: ClipConfig | None = None,
              batch_size: int = 8, max_new_tokens: int = 64) -> dict:
    """Held-out clip metrics of a Qwen2-VL toy: ``describe_video_f1`` (mean per-clip fact F1 of the greedy
    description against the clip's facts, ``clips.score_clip``; ``describe_video_f1_interval`` its bootstrap interval
    over clips, as the model card's bars have), ``describe_video_recall_<family>`` (which facts the
    descriptions miss, ``clips.recall_by_family``: first-frame objects and each event kind) and
    ``count_at_end_acc``; ``n`` clips."""
    from vlmflow.model import Batch
    from vlmflow.stats import bootstrap_ci
    from vlmflow.toy.evaluate import BAR_CONFIDENCE, BAR_RESAMPLES

    config = config or ClipConfig()
    f1, correct, facts = [], [], []
    for start in range(0, n, batch_size):
        clips = [make_clip(seed, split, i, config) for i in range(start, min(n, start + batch_size))]
        for question in (DESCRIBE_VIDEO_PROMPT, COUNT_AT_END_QUESTION):
            inputs, roles = vlm.adapter.prepare_video([c.images for c in clips], [question] * len(clips))
            batch = Batch(inputs.to(vlm.device), roles, [c.images[0].size for c in clips], [question] * len(clips))
            gens = vlm.generate_batch(batch, max_new_tokens=max_new_tokens)
            for clip, gen in zip(clips, gens, strict=True):
                if question == DESCRIBE_VIDEO_PROMPT:
                    facts.append((clip_facts(clip), parse_clip(gen.text)))
                    f1.append(score_clip(*facts[-1]).f1)
                else:
                    answer = next(q["answer"] for q in clip_questions(clip) if q["kind"] == "count_at_end")
                    correct.append(gen.text.strip() == answer)
    recalls = {f"describe_video_recall_{k}": v for k, v in recall_by_family(facts).items()}
    ci = bootstrap_ci(np.asarray(f1, dtype=float), confidence=BAR_CONFIDENCE, n_resamples=BAR_RESAMPLES)  # over clips
    return {"describe_video_f1": round(float(np.mean(f1)), 4),
            "describe_video_f1_interval": [round(ci.low, 4), round(ci.high, 4)], **recalls,
            "count_at_end_acc": round(float(np.mean(correct)), 4), "n_clips": n}


# ---- in the training loop (train.py, TrainConfig.clip_fraction) ---------------------------------------------------
CLIP_BATCH_DIVISOR = 4  # a clip has 2-4 frames of 64 tokens: a quarter of the clips costs about an image batch


def clip_batch_size(batch_size: int) -> int:
    return max(1, batch_size // CLIP_BATCH_DIVISOR)


def is_clip_step(seed: int, step: int, fraction: float) -> bool:
    """Whether stage-2 step ``step`` trains on clips: a seeded draw per step, so a resumed run draws the same."""
    if fraction <= 0:
        return False
    return bool(np.random.default_rng(np.random.SeedSequence([seed, 17, step])).random() < fraction)


def clip_training(cfg, model, processor) -> "ClipBatcher | None":
    """The clip batcher of a training run with ``cfg.clip_fraction > 0`` (None otherwise); only a Qwen2-VL toy
    reads video, so another architecture is refused before training starts."""
    if cfg.clip_fraction <= 0:
        return None
    if cfg.arch != "qwen2-vl":
        from vlmflow.toy.train import TrainingError

        raise TrainingError(f"clip training (clip fraction {cfg.clip_fraction}) needs --arch qwen2-vl, the "
                            f"architecture with a video input; got --arch {cfg.arch}")
    return ClipBatcher(model, processor, ClipConfig(scene=cfg.scenes))
