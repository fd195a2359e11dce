"""The sweep engine: many knockout / record configurations of one image, run as batches that share common work.

Where it sits: presets (``vlmflow.presets``) build the list of :class:`SweepConfig`; :class:`SweepEngine` runs them on
each image through the same attention function as ``VLM.generate`` (``vlmflow.attention.active``);
``vlmflow.sweep_rows`` turns the results into the tidy rows that the store (``vlmflow.store``) writes;
``vlmflow.sweep_run`` drives a whole stored sweep (``vlmflow sweep``, ``vf.sweep``, ``stored_sweep``) through the one
experiment path (``vlmflow.runner``). The contract: every configuration's greedy tokens equal ``vlm.generate(image,
question, knockout=cfg.knockouts, force_prefix=...)`` run alone, token for token (tests/unit/test_sweep.py).

How work is shared, per image:

1. **Shared prefill (batch 1).** The whole prompt runs once with no knockout (``VLM.prefill``), keeping its KV cache,
   the language model's input embeddings (image features merged) and rotary position ids (as the model's own code
   computed them, in the adapter's shape: ``Adapter.decoder_positions``), and the last position's logits.
   By causality, a configuration whose knockouts and recorded rows first touch prompt position ``b`` (its
   *boundary*) has exactly this cache at positions ``< b``. Configurations that only touch generated rows (baseline,
   KO image->generated) have ``b = P`` and share the whole prompt, including the first generated token's logits.
2. **Per-config suffix (one batched forward per chunk).** A chunk of configurations continues from the shared cache
   cropped to the chunk's smallest boundary, expanded along the batch (a view: no copy until the cache grows), over
   the prompt positions ``[b, P)``, each row with its own knockout.
3. **Batched greedy decoding**, each row with its own knockout, teacher-forcing rows that ask for a forced prefix.
   A row that emits end-of-sequence leaves the batch at once (its cache rows are dropped), so late steps of long
   generations only pay for the rows still running. Chunks whose configurations record attention keep every row to
   the end instead (one recorder per chunk; finished rows are cut off by position when results are read).

Decoding calls the language model and the output embedding directly with explicit position ids: for every supported
architecture the top-level model adds nothing after the language model's head. Positions of generated tokens
continue from the last prompt position (+1 per step, on every position axis), which is what transformers' own
generate does (``Prefill.next_position``).

Configurations are chunked ``batch_size`` at a time (memory: the KV cache grows with rows x positions), into a
preallocated KV buffer per chunk (``vlmflow.kvcache``: no ``torch.cat`` growth per step). ``run_many`` lets rows of
several images with the same prompt layout share chunks (each row keeps its own image's prefix, positions, baseline).

**Top-K configurations** (``SweepConfig(knockouts, keep=ImageSelection(k, by))``, the ``topk`` preset) are resolved
per image after the baseline: the baseline (recording ``SELECTION_RECORD``; run hidden if the sweep has no such
baseline) gives the attention ranking, the shared prefill the hidden-state norms (``vlmflow.selection``), and each
knockout becomes position-level knockouts hiding the image tokens outside the top K% (``SweepResult.knockouts``).
Order per image: plain configurations (baseline first), then top-K ones, then forced-prefix ones.

**Videos.** An image may be a ``vlmflow.adapters.base.Video`` (a clip's frames, Qwen2-VL's video input): the prompt
then carries each video token's frame (``TokenRoles.frames``), which boundaries and every row's knockouts resolve
``source_frames`` against; a top-K selection ranks the tokens of all frames together (``SweepConfig`` refuses a
top-K knockout that names frames).
"""
from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlmflow.errors import VlmflowError
from vlmflow.knockout import Knockout
from vlmflow.knockout import spec_id as knockout_spec_id
from vlmflow.record import Record
from vlmflow.roles import role_id_mask
from vlmflow.selection import ImageSelection

if TYPE_CHECKING:

    from vlmflow.model import VLM, Prefill
    from vlmflow.record import AttentionRecord

DEFAULT_QUESTION = "describe the image"
# what the baseline records when top-K configurations rank image tokens by its attention (the rows that predicted the
# description's tokens, every layer, head mean): the same record as vlmflow.reprompt.describe
SELECTION_RECORD = Record(rows=("last_prompt", "generated"))


class SweepError(VlmflowError):
    """A sweep cannot run as asked (duplicate spec ids, a generation setting greedy sweeps do not reproduce...)."""


@dataclass(frozen=True)
class SweepConfig:
    """One configuration of a sweep.

    knockouts: specs applied together (empty = no knockout); record: what attention to record (None = nothing);
    force_prefix: teacher-force the first k generated tokens to the baseline's (0 = free decoding);
    labels: tidy-table columns that describe the configuration (``family``, ``ko_type``, ``layer``...), as pairs;
    keep: top-K selection: every knockout (source ``image``, no source positions or frames) then hides only the image
    tokens outside the top K% (ranked over every frame of a video together), resolved per image by the engine (see
    the module docstring).
    """

    knockouts: tuple[Knockout, ...] = ()
    record: Record | None = None
    force_prefix: int = 0
    labels: tuple[tuple[str, Any], ...] = ()
    keep: ImageSelection | None = None

    def __post_init__(self):
        kos = self.knockouts
        if isinstance(kos, Knockout):
            kos = (kos,)
        kos = tuple(sorted(kos, key=lambda k: k.spec_id)) if kos else ()
        for k in kos:
            if not isinstance(k, Knockout):
                raise SweepError(f"SweepConfig.knockouts holds {k!r}, not a vlmflow.Knockout")
        object.__setattr__(self, "knockouts", kos)
        if int(self.force_prefix) < 0:
            raise SweepError(f"force_prefix must be >= 0, got {self.force_prefix}")
        object.__setattr__(self, "force_prefix", int(self.force_prefix))
        object.__setattr__(self, "labels", tuple((str(k), v) for k, v in dict(self.labels).items()))
        if self.keep is not None:
            if not isinstance(self.keep, ImageSelection):
                raise SweepError(f"SweepConfig.keep holds {self.keep!r}, not a vlmflow.selection.ImageSelection")
            if not kos:
                raise SweepError(f"SweepConfig keep={self.keep.spec_id} needs knockouts whose image tokens it restricts")
            for k in kos:
                if k.source != "image" or k.source_positions is not None:
                    raise SweepError(f"SweepConfig keep={self.keep.spec_id}: knockout {k.spec_id} must have the source "
                                     f"'image' and no source positions (the selection chooses them per image)")
                if k.source_frames is not None:  # the top K% is ranked over every frame's tokens, never per frame
                    raise SweepError(f"SweepConfig keep={self.keep.spec_id}: knockout {k.spec_id} names source frames; "
                                     f"a top-K selection ranks the tokens of all frames together, so hide frames with "
                                     f"a plain configuration (no keep=) instead")

    @property
    def spec_id(self) -> str:
        """Stable key: the knockout spec id, plus ``| keep=top5%:attention`` for a top-K selection and ``| force=k``
        for a forced prefix (recording does not change it)."""
        sid = knockout_spec_id(self.knockouts)
        if self.keep is not None:
            sid = f"{sid} | keep={self.keep.spec_id}"
        return f"{sid} | force={self.force_prefix}" if self.force_prefix else sid

    @property
    def is_baseline(self) -> bool:
        return not self.knockouts and not self.force_prefix and self.keep is None

    def label(self, name: str, default=None):
        return dict(self.labels).get(name, default)


@dataclass
class SweepResult:
    """The outcome of one configuration on one image."""

    config: SweepConfig
    token_ids: list[int]  # generated tokens, end-of-sequence excluded
    text: str
    finished: bool  # stopped on end-of-sequence (else max_new_tokens)
    first_token: int  # the free first token (argmax of the raw first-step logits, before any forcing)
    baseline_first_token: int
    forced: list[int] = field(default_factory=list)
    record: "AttentionRecord | None" = None
    knockouts: tuple[Knockout, ...] | None = None  # the knockouts applied (top-K: resolved to positions); None = config's

    def __post_init__(self):
        if self.knockouts is None:
            self.knockouts = self.config.knockouts

    @property
    def spec_id(self) -> str:
        return self.config.spec_id

    @property
    def first_token_matches_baseline(self) -> bool:
        return self.first_token == self.baseline_first_token


def boundary(config: SweepConfig, role_ids: Sequence[int], n_layers: int, frames: Sequence[int] | None = None) -> int:
    """First prompt position whose computation differs from the plain prompt pass under ``config``: the first
    position a knockout targets (in a layer it touches) at or after the first position of its source, or the first
    recorded prompt row; the prompt length P when
    only generated rows are touched. ``role_ids``: the prompt's role id per position (one row, no padding);
    ``frames``: its frame index per position (``TokenRoles.frames``, a video's; None = a single image)."""
    P = len(role_ids)
    first = P
    for ko in config.knockouts:
        if not ko.layer_indices(n_layers):
            continue
        # by causality a target row i is only changed if some source column j <= i exists: KO image->text leaves
        # BOS and the system prompt (text before the image) untouched
        src, tgt = ko.source_columns(role_ids, frames), role_id_mask(ko.target)
        first_src = next((j for j, blocked in enumerate(src) if blocked), P)
        hit = next((i for i in range(first_src, P) if tgt[role_ids[i]]), P)
        first = min(first, hit)
    rec = config.record
    if rec is not None:
        if rec.last_prompt:
            first = min(first, P - 1)
        if rec.row_roles:
            table = role_id_mask(sorted(rec.row_roles))
            first = min(first, next((i for i, r in enumerate(role_ids) if table[r]), P))
    return first


def _record_key(record: Record | None) -> str:
    return "" if record is None else repr(record)


class SweepEngine:
    """Runs lists of :class:`SweepConfig` on images; see the module docstring.

    batch_size: configurations decoded together (rows of one chunk); drop_finished: shrink the batch as rows finish.
    """

    def __init__(self, vlm: "VLM", *, max_new_tokens: int = 64, batch_size: int = 32, drop_finished: bool = True):
        if batch_size < 1:
            raise SweepError(f"batch_size must be >= 1, got {batch_size}")
        from vlmflow.model import check_max_new_tokens

        self.vlm = vlm
        self.max_new_tokens = check_max_new_tokens(max_new_tokens)
        self.batch_size = int(batch_size)
        self.drop_finished = drop_finished
        self._check_generation_config()
        model = vlm.model
        self.lm = vlm.adapter.language_model()
        self.embed = model.get_input_embeddings()
        self.head = model.get_output_embeddings()
        self.eos_ids = vlm.eos_ids

    # ---- checks -------------------------------------------------------------------------------------------
    def _check_generation_config(self) -> None:
        """Greedy sweeps reproduce plain greedy decoding; refuse settings that would make ``generate`` differ."""
        gen = self.vlm.model.generation_config
        odd = []
        if getattr(gen, "repetition_penalty", None) not in (None, 1.0):
            odd.append(f"repetition_penalty={gen.repetition_penalty}")
        for name in ("no_repeat_ngram_size", "min_new_tokens", "min_length", "bad_words_ids", "suppress_tokens",
                     "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias"):
            value = getattr(gen, name, None)
            if value not in (None, 0, [], {}):
                odd.append(f"{name}={value!r}")
        if odd:
            raise SweepError(
                f"model {self.vlm.name}: its generation_config sets {', '.join(odd)}; the sweep engine decodes plain "
                f"greedy and would not match vlm.generate. Reset these fields on model.generation_config first."
            )
        from vlmflow.attention import check_implementation

        check_implementation(self.vlm.adapter.text_attn_implementation())

    # ---- public -------------------------------------------------------------------------------------------
    def run(self, image, configs: Sequence[SweepConfig], question: str = DEFAULT_QUESTION) -> list[SweepResult]:
        """All ``configs`` on one image; results in the order of ``configs``."""
        return self.run_many([image], configs, question)[0]

    def run_many(self, images: Sequence, configs: Sequence[SweepConfig],
                 question: str = DEFAULT_QUESTION) -> list[list[SweepResult]]:
        """All ``configs`` on each image; per image, results in the order of ``configs``.

        Images whose prompts have the same token layout (same question, same number of image tokens: e.g. every
        fixed-resolution model's image) decode in shared batches, rows of several images together: fewer, fuller forwards.
        Each image still gets its own prefill, and each row exactly its own image's prefix cache."""
        import torch

        configs = list(configs)
        ids = [c.spec_id for c in configs]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise SweepError(f"duplicate configurations in a sweep: {', '.join(dup)}")
        norms = any(c.keep is not None and c.keep.by == "norm" for c in configs)
        out: list[list[SweepResult] | None] = [None] * len(images)
        with torch.no_grad():
            pres = [self._prefill(im, question, norms=norms) for im in images]
            layouts: dict[tuple[int, ...], list[int]] = {}
            for m, pre in enumerate(pres):
                layouts.setdefault(tuple(pre.batch.roles.ids[0].tolist()), []).append(m)
            for members in layouts.values():
                for m, res in zip(members, self._run_images([pres[m] for m in members], configs)):
                    out[m] = res
        return out

    def _run_images(self, pres: "list[Prefill]", configs: list[SweepConfig]) -> list[list[SweepResult]]:
        """``configs`` on images that share one prompt layout (so one boundary per concrete configuration)."""
        import dataclasses

        L = self.vlm.num_layers
        role_ids = pres[0].batch.roles.ids[0].tolist()
        frames = pres[0].batch.roles.frames  # one layout: the same frame per position for every image here
        frames = None if frames is None else frames[0].tolist()
        M = len(pres)
        results: list[list[SweepResult | None]] = [[None] * len(configs) for _ in pres]
        plain = [i for i, c in enumerate(configs) if not c.force_prefix and c.keep is None]
        selected = [i for i, c in enumerate(configs) if not c.force_prefix and c.keep is not None]
        forced = [i for i, c in enumerate(configs) if c.force_prefix]
        need_record = any(c.keep is not None and c.keep.by in ("attention", "band") for c in configs)
        base = next((i for i in plain if configs[i].is_baseline
                     and (not need_record or configs[i].record == SELECTION_RECORD)), None)
        baselines: list[SweepResult | None] = [None] * M
        if base is not None:
            plain.sort(key=lambda i: i != base)  # the baselines' chunks run first
        elif selected or forced:  # top-K and forcing need the baseline: run it, but do not report it
            hidden = SweepConfig(record=SELECTION_RECORD if need_record else None)
            bound = boundary(hidden, role_ids, L, frames)
            for start in range(0, M, self.batch_size):
                rows = [(pres[m], hidden, bound, []) for m in range(start, min(M, start + self.batch_size))]
                for m, r in zip(range(start, M), self._run_group(rows)):
                    baselines[m] = r
        concrete = [list(configs) for _ in pres]  # as run: top-K configurations resolved per image
        for phase in (plain, selected, forced):
            if not phase:
                continue
            if base is not None and results[0][base] is not None:
                baselines = [results[m][base] for m in range(M)]
            items = [(m, i) for i in phase for m in range(M)]
            for m, i in items:
                if configs[i].keep is not None:
                    concrete[m][i] = dataclasses.replace(configs[i], keep=None,
                                                         knockouts=self._resolve(configs[i], pres[m], baselines[m]))
            bounds = {(m, i): boundary(concrete[m][i], role_ids, L, frames) for m, i in items}
            # chunks: same record spec together (one recorder per chunk), similar boundaries together
            ordered = sorted(items, key=lambda mi: (_record_key(configs[mi[1]].record), -bounds[mi]))
            if phase is plain and base is not None:
                ordered.sort(key=lambda mi: mi[1] != base)  # stable: the baselines first
            chunks: list[list[tuple[int, int]]] = []
            for mi in ordered:
                if (chunks and len(chunks[-1]) < self.batch_size
                        and _record_key(configs[chunks[-1][0][1]].record) == _record_key(configs[mi[1]].record)):
                    chunks[-1].append(mi)
                else:
                    chunks.append([mi])
            for chunk in chunks:
                chunk.sort(key=lambda mi: mi[0])  # rows of one image next to each other: one prefix copy each
                rows = [(pres[m], concrete[m][i], bounds[(m, i)],
                         baselines[m].token_ids[: configs[i].force_prefix] if configs[i].force_prefix else [])
                        for m, i in chunk]
                for (m, i), r in zip(chunk, self._run_group(rows)):
                    results[m][i] = dataclasses.replace(r, config=configs[i], knockouts=concrete[m][i].knockouts)
        return results

    def _resolve(self, config: SweepConfig, pre: "Prefill", baseline: SweepResult) -> tuple[Knockout, ...]:
        """A top-K configuration's knockouts restricted to the image tokens outside its selection, on this image."""
        L = self.vlm.num_layers
        image_pos = pre.batch.roles.positions("image", 0).tolist()  # one unpadded row: prompt coordinates
        sel = config.keep
        attention = None
        if sel.by in ("attention", "band"):
            rec = baseline.record
            if rec is None or not len(rec.row_positions):
                raise SweepError(f"{config.spec_id}: the baseline recorded no attention rows (no token generated?); "
                                 f"rank by 'norm' or 'random' instead")
            attention = rec.image_map.float().mean(0)  # [L, N]: mean over the rows that predicted the tokens
        ranking = sel.ranking(L, len(image_pos), attention=attention, norms=pre.image_norms)
        out: list[Knockout] = []
        for ko in config.knockouts:
            out.extend(sel.hide(ko, ranking, image_pos, L))
        return tuple(out)

    # ---- internals ----------------------------------------------------------------------------------------
    def _prefill(self, image, question: str, norms: bool = False) -> "Prefill":
        """``VLM.prefill`` of one image, checked for what sharing its prefix needs."""
        vlm = self.vlm
        pre = vlm.prefill(vlm.prepare([image], [question]), hidden_norms=norms)  # a Video: its frames as one input
        if pre.embeds is None:
            raise SweepError(f"model {vlm.name}: its language model was not called with inputs_embeds; the sweep "
                             f"engine cannot share the prompt prefix for {type(vlm.model).__name__}")
        for i, layer in enumerate(pre.cache.layers):
            if type(layer).__name__ != "DynamicLayer":
                raise SweepError(f"model {vlm.name}: cache layer {i} is a {type(layer).__name__}; the sweep engine "
                                 f"shares only plain dynamic caches (no sliding-window layers)")
        return pre

    def _lm_step(self, embeds, positions, cache, n_keys: int):
        """One language-model forward over ``embeds`` [B, Q, hidden] continuing ``cache``; -> last logits [B, vocab]."""
        import torch

        B = embeds.shape[0]
        mask = torch.ones(B, n_keys, dtype=torch.long, device=embeds.device)  # as generate passes it: no padding
        out = self.lm(inputs_embeds=embeds, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True)
        hidden = out.last_hidden_state[:, -1:]
        return self.head(hidden)[:, -1].float()

    def _chunk_cache(self, segments: list, b: int, B: int, P: int):
        """Each image's prefill cache cropped to the boundary ``b``, copied once into a buffer per row with room for
        the suffix and every decode step (``vlmflow.kvcache``: no torch.cat growth per step)."""
        from vlmflow.kvcache import buffer_cache

        n_layers = len(segments[0][0].cache.layers)
        return buffer_cache([[(pre.cache.layers[layer].keys[:, :, :b], pre.cache.layers[layer].values[:, :, :b], n)
                              for pre, _, n in segments] for layer in range(n_layers)], B, P + self.max_new_tokens)

    def _run_group(self, rows_in: "list[tuple[Prefill, SweepConfig, int, list[int]]]") -> list[SweepResult]:
        """Run one chunk: per row (its image's prefill, concrete configuration, boundary, tokens to force).

        Every row's image has the same prompt layout (length P, roles); rows of one image are adjacent. Over 60
        lines because it is the batched greedy loop: the rows still running, their positions and their knockouts'
        attention state change together at each step (a finished row leaves all three at once)."""
        import torch

        from vlmflow.roles import TokenRoles

        vlm = self.vlm
        pres = [r[0] for r in rows_in]
        chunk = [r[1] for r in rows_in]
        B, P = len(chunk), pres[0].length
        b = min(r[2] for r in rows_in)
        record = chunk[0].record
        segments = _image_segments(pres)
        roles_all = TokenRoles(torch.cat([pre.batch.roles.ids.expand(n, -1) for pre, _, n in segments]), P,
                               None if pres[0].batch.roles.frames is None else
                               torch.cat([pre.batch.roles.frames.expand(n, -1) for pre, _, n in segments]))
        kos_all = [list(c.knockouts) for c in chunk]
        cache = self._chunk_cache(segments, b, B, P)
        pos_last = torch.cat([_per_row(pre.positions[..., -1:], n) for pre, _, n in segments], dim=-2)
        forced = [list(r[3]) for r in rows_in]
        tokens: list[list[int]] = [[] for _ in chunk]
        first_free = [int(pre.last_logits.argmax()) for pre in pres]  # the baseline's first token, until step 0
        finished = [False] * B
        rows = list(range(B))  # chunk indices of the rows still in the batch
        keep_all = record is not None or not self.drop_finished
        stack = contextlib.ExitStack()

        def enter(sel: list[int]):
            stack.close()
            roles = TokenRoles(roles_all.ids[sel], P, None if roles_all.frames is None else roles_all.frames[sel])
            return stack.enter_context(vlm.active(roles, [kos_all[i] for i in sel], record))  # + the model's plant

        state = enter(rows)
        try:
            if b < P:
                emb = torch.cat([pre.embeds[:, b:P].expand(n, -1, -1) for pre, _, n in segments])
                pos = torch.cat([_per_row(pre.positions[..., b:P], n) for pre, _, n in segments], dim=-2)
                logits = self._lm_step(emb, pos, cache, P)
            else:
                logits = torch.stack([pre.last_logits for pre in pres])
            device = pres[0].embeds.device
            for step in range(self.max_new_tokens):
                free = logits.argmax(-1).tolist()  # [len(rows)]
                next_ids = []
                for j, i in enumerate(rows):
                    if step == 0:
                        first_free[i] = int(free[j])
                    t = forced[i][step] if step < len(forced[i]) else int(free[j])
                    if not finished[i]:
                        if t in self.eos_ids:
                            finished[i] = True
                        else:
                            tokens[i].append(t)
                    next_ids.append(t)
                if step == self.max_new_tokens - 1 or all(finished[i] for i in rows):
                    break
                if not keep_all and any(finished[i] for i in rows):
                    keep = [j for j, i in enumerate(rows) if not finished[i]]
                    keep_t = torch.tensor(keep, device=device)
                    cache.batch_select_indices(keep_t)
                    pos_last = pos_last.index_select(-2, keep_t.to(pos_last.device))
                    rows = [rows[j] for j in keep]
                    next_ids = [next_ids[j] for j in keep]
                    state = enter(rows)
                n = P + step  # absolute position of the token fed now
                emb = self.embed(torch.tensor(next_ids, device=device)[:, None])
                logits = self._lm_step(emb, pos_last + 1 + step, cache, n + 1)
            return self._chunk_results(rows_in, tokens, finished, first_free, state.recorder if record is not None else None)
        finally:
            stack.close()

    def _chunk_results(self, rows_in: list, tokens: list[list[int]], finished: list[bool], first_free: list[int],
                       recorder) -> list[SweepResult]:
        """One SweepResult per row of a decoded chunk; ``recorder`` (the chunk's attention recorder, or None) gives
        each row's record, cut at the last position that row fed to the model."""
        import torch

        results = []
        tok = self.vlm.tokenizer
        for i, (pre, c, _, forced) in enumerate(rows_in):
            rec = None
            if recorder is not None:
                seq = torch.tensor(pre.batch.inputs["input_ids"][0].tolist() + tokens[i])
                produced = len(tokens[i]) + (1 if finished[i] else 0)
                rec = recorder.result(i, seq, limit=pre.length + produced - 1)
            results.append(SweepResult(
                config=c, token_ids=tokens[i], text=tok.decode(tokens[i], skip_special_tokens=True).strip(),
                finished=finished[i], first_token=first_free[i], baseline_first_token=int(pre.last_logits.argmax()),
                forced=list(forced), record=rec))
        return results


def _image_segments(pres: list) -> list[list]:
    """(prefill, first row, row count) of each run of consecutive rows that share an image (one prefix copy each)."""
    segments: list[list] = []
    for j, pre in enumerate(pres):
        if segments and segments[-1][0] is pre:
            segments[-1][2] += 1
        else:
            segments.append([pre, j, 1])
    return segments


def _per_row(t, n):
    """[(axes,) 1, T] -> [(axes,) n, T]: one image's positions for n rows (a view)."""
    return t.expand(*t.shape[:-2], n, t.shape[-1])

# The rest of the sweep path lives by job in its own modules; these names stay importable from here
# (``from vlmflow.sweep import run_sweep``...), resolved on first use (PEP 562) so that importing ``sweep_run`` first,
# which imports this module, is no import cycle; ``vf.sweep(...)`` calls :func:`vlmflow.sweep_run.sweep`.
_MOVED = {"attention_rows": "vlmflow.sweep_rows", "result_rows": "vlmflow.sweep_rows",
          **{name: "vlmflow.sweep_run" for name in ("SweepImage", "check_preset", "run_sweep", "stored_sweep_rows",
                                                     "sweep", "sweep_images", "sweep_settings")}}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SELECTION_RECORD", "SweepConfig", "SweepEngine", "SweepError", "SweepResult", "boundary", *_MOVED]


class _CallableModule(types.ModuleType):
    """``vlmflow.sweep`` stays this module (``vf.sweep.SweepEngine``...), and calling it runs :func:`sweep`."""

    def __call__(self, *args, **kwargs):
        from vlmflow.sweep_run import sweep

        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
