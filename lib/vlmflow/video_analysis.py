"""Video: the paper's mechanisms measured on clips (the chapter "Video", ``notebooks/video.ipynb``).

Where it sits: clips are data like images. ``vlmflow.data.resolve("toy-clips-test", n, seed)`` gives one
``vlmflow.adapters.base.Video`` per clip (its frames, one model input through Qwen2-VL's video input) with the
``toy.clips.Clip`` as ground truth; ``VLM.prepare`` lays a ``Video`` out with every video token's frame in
``TokenRoles.frames``, so knockouts name frames (``Knockout(..., source_frames=[k])``) and the sweep engine,
re-prompting and generation take a clip wherever they take an image. This module adds only what is particular to
clips, and stores every result through the one experiment path (``vlmflow.runner.Experiment``):

- :func:`clip_configs` / :func:`stored_clip_sweep`: Figure 2's knockouts (image->generated vs image->text from layer
  l, free and first-token forced) plus one knockout per frame (frame k hidden from text and generated tokens in
  every layer), through ``sweep_run.stored_sweep_rows`` (clips of one frame count per call: their per-frame
  configurations differ), each row scored by the clip fact F1 (``toy.clips.score_clip``).
- :func:`frame_mass` (one ``AttentionRecord``) and :func:`frame_mass_table` (a stored sweep's attention rows): the
  attention a row puts on each frame's tokens next to the share of keys that frame holds (uniform attention).
- :func:`localize_clip` / :func:`stored_clip_localization`: the per-layer attention localization of Figure 7 applied
  to one frame: for each event clause the model got right (an object that appeared, moved or changed colour), the
  naming token's attention over the tokens of the frame that shows the change, scored against that object's mask in
  that frame (``localize.masks``), and which frame holds the peak over the whole clip.
- re-prompting from a compressed clip context: ``reprompt.stored_evaluate(data="toy-clips-test")`` (the clip items
  are ``reprompt.table.clip_items``), scored per question here by :func:`clip_answer_correct`.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd

    from vlmflow.model import VLM
    from vlmflow.record import AttentionRecord

CLIP_DATA = "toy-clips-test"
FRAME_KO_TARGET = ("text", "generated")
LOCALIZED_EVENTS = ("appear", "move", "recolor")  # the object shows the change in the event's own frame
DEFAULT_TOLERANCES = (0, 1)  # tokens, as the toy pages of Figure 7


class VideoAnalysisError(VlmflowError):
    pass


# ---- attention mass per frame ---------------------------------------------------------------------------------

def frames_of_image_tokens(roles, row: int = 0) -> np.ndarray:
    """int[N_img]: the frame of each image / video token of ``row`` (sequence order, as ``image_map``)."""
    ids = roles.frame_ids()[row]
    image = roles.mask("image")[row]
    return ids[image].cpu().numpy().astype(int)


def split_by_frame(values, frame_ids: Sequence[int], n_frames: int | None = None) -> np.ndarray:
    """float[..., F]: ``values`` [..., N_img] summed over each frame's tokens (``frame_ids``: the frame of each)."""
    a = np.asarray(values, dtype=np.float64)
    f = np.asarray(frame_ids, dtype=int)
    if a.shape[-1] != len(f):
        raise VideoAnalysisError(f"{a.shape[-1]} image-token values but {len(f)} frame ids")
    F = int(f.max()) + 1 if n_frames is None else int(n_frames)
    return np.stack([a[..., f == k].sum(-1) for k in range(F)], axis=-1)


def frame_key_share(image_share, frame_ids: Sequence[int], n_frames: int | None = None) -> np.ndarray:
    """float[..., F]: the share of a row's keys that frame k holds: the image share of its keys times frame k's
    token count over all image tokens (what uniform attention would put on frame k)."""
    f = np.asarray(frame_ids, dtype=int)
    F = int(f.max()) + 1 if n_frames is None else int(n_frames)
    counts = np.bincount(f, minlength=F)[:F] / len(f)
    return np.asarray(image_share, dtype=np.float64)[..., None] * counts


def frame_mass(record: "AttentionRecord", frame_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(mass float[R, L, F], share float[R, F]) of one recorded generation: the head-averaged attention each
    recorded row puts on frame k's tokens in each layer, and frame k's share of the keys that row sees.
    ``frame_ids``: the frame of each image token (:func:`frames_of_image_tokens`). mass / share > 1: frame k gets
    more than uniform attention."""
    from vlmflow.roles import ROLES

    image = record.image_map.float()
    if image.ndim == 4:  # heads="all"
        image = image.mean(2)
    share = record.key_share[:, ROLES.index("image")].float().numpy()
    return split_by_frame(image.numpy(), frame_ids), frame_key_share(share, frame_ids)


def frame_mass_table(attention: "pd.DataFrame", n_frames: dict[str, int]) -> "pd.DataFrame":
    """Per (clip, configuration, recorded position, layer, frame) of a stored sweep's attention rows
    (``sweep_rows.attention_rows``): ``mass`` on the frame, its key ``share`` and ``ratio`` = mass / share.
    ``n_frames``: the frame count of each clip key (every frame of a toy clip has the same number of tokens)."""
    import pandas as pd

    out = []
    for r in attention.itertuples(index=False):
        F = n_frames[r.image]
        image_map = np.asarray(r.image_map, dtype=np.float64)
        ids = np.repeat(np.arange(F), len(image_map) // F)
        if len(ids) != len(image_map):
            raise VideoAnalysisError(f"clip {r.image}: {len(image_map)} video tokens do not split into {F} frames")
        mass = split_by_frame(image_map, ids, F)
        share = frame_key_share(r.share_image, ids, F)
        for k in range(F):
            out.append({"image": r.image, "spec_id": r.spec_id, "position": r.position, "layer": r.layer,
                        "n_frames": F, "frame": k, "mass": mass[k], "share": share[k],
                        "ratio": mass[k] / share[k] if share[k] > 0 else np.nan})
    return pd.DataFrame(out)


# ---- knockouts ------------------------------------------------------------------------------------------------

def frame_configs(n_frames: int) -> list:
    """One configuration per frame: frame k's tokens hidden from the text and generated tokens in every layer."""
    from vlmflow.knockout import Knockout
    from vlmflow.sweep import SweepConfig

    return [SweepConfig((Knockout("image", FRAME_KO_TARGET, source_frames=[k]),),
                        labels=(("family", "frame"), ("ko_type", "img->txt+gen"), ("frame", k), ("forced", False)))
            for k in range(n_frames)]


def clip_configs(n_layers: int, n_frames: int, force_prefix: int = 1) -> list:
    """The from-layer preset (baseline recording its attention; image->generated, image->text, image->text+generated
    from layer l; each also with the first ``force_prefix`` tokens forced), then :func:`frame_configs`."""
    from vlmflow.presets import preset

    return preset("from-layer", n_layers, force_prefix=force_prefix) + frame_configs(n_frames)


def clip_truth(n_clips: int, seed: int = 0, data: str = CLIP_DATA) -> tuple[str, dict[str, Any]]:
    """(data id, {clip key: Clip}) of the first ``n_clips`` clips of ``data`` (a ``toy-clips-*`` name)."""
    from vlmflow.data.resolver import CLIP_SPLITS, resolve

    if data not in CLIP_SPLITS:
        raise VideoAnalysisError(f"data {data!r} is not a clip set; use one of {', '.join(CLIP_SPLITS)}")
    resolved = resolve(data, n_clips, seed)
    return resolved.data_id, {im.key: resolved.truth(i) for i, im in enumerate(resolved.images)}


def stored_clip_sweep(results_dir, *, model=None, vlm: "VLM | None" = None, n_clips: int = 20, seed: int = 0,
                      data: str = CLIP_DATA, device: str | None = None, dtype=None, max_new_tokens: int = 48,
                      force_prefix: int = 1, batch_size: int = 32, progress: bool = True
                      ) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """(results, frame mass) of :func:`clip_configs` on the first ``n_clips`` clips, stored and resumed through
    ``sweep_run.stored_sweep_rows`` (one call per frame count, one folder: the key is the data's and the question's).

    results: one row per (clip, configuration) with its labels, text, ``f1`` (clip facts, ``score_clip``) and
    ``n_frames``; frame mass: :func:`frame_mass_table` of the baseline's recorded generated rows (the rows that
    predict the second token on). ``attrs``: ``store``, ``computed``, ``n_layers``, ``data_id``."""
    import pandas as pd

    from vlmflow.store import load_results
    from vlmflow.sweep_run import stored_sweep_rows
    from vlmflow.toy.clips import DESCRIBE_VIDEO_PROMPT, clip_facts, parse_clip, score_clip

    data_id, clips = clip_truth(n_clips, seed, data)
    n_frames = {key: len(clip.frames) for key, clip in clips.items()}
    parts, computed, store, n_layers = [], 0, None, None
    for F in sorted(set(n_frames.values())):
        keys = [k for k, n in n_frames.items() if n == F]
        rows = stored_sweep_rows(results_dir, lambda L, F=F: clip_configs(L, F, force_prefix), model=model, vlm=vlm,
                                 data=data, n_images=n_clips, seed=seed, device=device, dtype=dtype,
                                 question=DESCRIBE_VIDEO_PROMPT, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, progress=progress, keys=keys,
                                 extra_settings={"force_prefix": int(force_prefix), "frame_ko": list(FRAME_KO_TARGET)})
        parts.append(rows)
        computed += rows.attrs["computed"]
        store, n_layers = rows.attrs["store"], rows.attrs["n_layers"]
    results = pd.concat(parts, ignore_index=True)
    results["n_frames"] = results["image"].map(n_frames)
    results["f1"] = [score_clip(clip_facts(clips[k]), parse_clip(t)).f1 for k, t in zip(results.image, results.text)]
    attention = load_results(store, "attention")
    base = results.loc[results.family == "baseline", "spec_id"].iloc[0]
    attention = attention[attention.image.isin(list(clips)) & (attention.spec_id == base)]
    prompt_end = attention.groupby("image")["position"].transform("min")  # the last prompt row: the first token
    mass = frame_mass_table(attention[attention.position > prompt_end], n_frames)
    for df in (results, mass):
        df.attrs.update(store=store, computed=computed, n_layers=n_layers, data_id=data_id)
    return results, mass


# ---- localization per frame -------------------------------------------------------------------------------------

def frame_geometry(vlm: "VLM", batch, row: int = 0):
    """The ``ImageGeometry`` of one frame of ``row``'s video (every frame has the grid of one temporal patch)."""
    from vlmflow.adapters.geometry import qwen2_vl_geometry

    _, h, w = (int(v) for v in batch.inputs["video_grid_thw"][row])
    return qwen2_vl_geometry(batch.image_sizes[row], [1, h, w], vlm.processor)


def event_mentions(gen, tokenizer, clip) -> list[tuple[Any, Any]]:
    """(event, naming Mention) for each event clause of the generated text that names a true event of ``clip`` with
    its kind and object right (each true event matched once, in order): the clause's first named object is the
    event's."""
    import re

    from vlmflow.localize.mentions import mentions
    from vlmflow.toy.clips import parse_clip
    from vlmflow.toy.scenes import ToyObject

    found = mentions(gen, tokenizer, "toy")
    text = tokenizer.decode(gen.token_ids, skip_special_tokens=True).lower()
    starts = [m.start() for m in re.finditer(r"\bthen\b", text)]
    ends = starts[1:] + [len(text)]
    open_events = list(clip.events)
    out = []
    for start, end in zip(starts, ends):
        _, facts = parse_clip(text[start:end])  # "then <clause>": the clause's event fact
        if not facts:
            continue
        kind, obj, _ = facts[0]
        named = next((m for m in found if start <= m.char < end and m.token >= 0), None)
        event = next((e for e in open_events if e.kind == kind and e.object == obj), None)
        if named is None or event is None or ToyObject(*named.attributes) != obj:
            continue
        open_events.remove(event)
        out.append((event, named))
    return out


def localize_clip(vlm: "VLM", clip, key: str, *, max_new_tokens: int = 48,
                  tolerances: Sequence[float] = DEFAULT_TOLERANCES, force_truth: bool = False
                  ) -> tuple[list[dict], dict]:
    """(rows, clip row) of one clip: describe it with attention recorded; per correctly described event of
    ``LOCALIZED_EVENTS``, per layer and tolerance (tokens): ``hit`` (the naming token's attention peak over the
    target frame's tokens lies within ``tolerance`` tokens of the object's mask in that frame), ``chance`` (the
    share of that frame's tokens that would hit), ``mass_in`` / ``mask_share`` (attention on the object within the
    frame against its area share), ``frame_hit`` (the peak over all video tokens lies in the target frame) against
    ``frame_chance`` (the target frame's share of video tokens), and the target frame's mass and key share.
    ``force_truth``: read the attention while the model is fed the clip's true description (teacher forcing), so
    every event is read whether or not the model would have described it."""
    from vlmflow.adapters.base import Video
    from vlmflow.heatmap import token_position
    from vlmflow.localize.masks import MaskTokens, mass_inside
    from vlmflow.localize.score import record_for
    from vlmflow.toy.clips import DESCRIBE_VIDEO_PROMPT, describe_clip

    batch = vlm.prepare(Video(clip.images), DESCRIBE_VIDEO_PROMPT)
    force = None
    if force_truth:
        force = vlm.tokenizer(describe_clip(clip), add_special_tokens=False)["input_ids"]
        max_new_tokens = len(force)
    gen = vlm.generate_batch(batch, record=record_for("mean"), max_new_tokens=max_new_tokens, force_prefix=force)[0]
    geometry = frame_geometry(vlm, batch)
    frame_ids = frames_of_image_tokens(gen.roles)
    F = len(clip.frames)
    n = geometry.n_tokens
    if len(frame_ids) != F * n:
        raise VideoAnalysisError(f"clip {key}: {len(frame_ids)} video tokens, not {F} frames x {n}")
    rec = gen.record
    maps = rec.image_map.float().numpy()  # [R, L, N]
    positions = rec.row_positions.tolist()
    from vlmflow.roles import ROLES

    share_image = rec.key_share[:, ROLES.index("image")].float().numpy()
    rows = []
    for event, m in event_mentions(gen, vlm.tokenizer, clip):
        if event.kind not in LOCALIZED_EVENTS:
            continue
        pos = token_position(gen.prompt_length, m.token, "predicting")
        if pos not in positions:
            continue
        r = positions.index(pos)
        k = event.frame
        track = next(t for t in clip.frames[k] if t.track == event.track)
        target = MaskTokens.build(track.placed.mask, geometry)
        per_frame = split_by_frame(maps[r], frame_ids, F)  # [L, F]
        key_share = frame_key_share(share_image[r], frame_ids, F)
        for li, layer in enumerate(rec.layers):
            a = maps[r, li, k * n:(k + 1) * n]
            peak = int(np.argmax(a))
            mass_in, mask_share = mass_inside(a, target)
            base = {"image_id": key, "event": event.kind, "frame": k, "n_frames": F, "track": event.track,
                    "token": m.token, "word": m.word, "layer": int(layer),
                    "frame_hit": bool(int(np.argmax(maps[r, li])) // n == k), "frame_chance": 1.0 / F,
                    "frame_mass": float(per_frame[li, k]), "frame_share": float(key_share[k]),
                    "mass_in": mass_in, "mask_share": mask_share}
            for tol in tolerances:
                hits = target.hits(tol, "tokens")
                rows.append({**base, "tolerance": float(tol), "hit": bool(hits[peak]), "chance": float(hits.mean())})
    clip_row = {"image_id": key, "n_frames": F, "description": gen.text,
                "n_events": sum(e.kind in LOCALIZED_EVENTS for e in clip.events),
                "n_localized": len({(r["frame"], r["track"]) for r in rows})}
    return rows, clip_row


def stored_clip_localization(results_dir, *, model=None, vlm: "VLM | None" = None, n_clips: int = 20, seed: int = 0,
                             data: str = CLIP_DATA, device: str | None = None, dtype=None, max_new_tokens: int = 48,
                             tolerances: Sequence[float] = DEFAULT_TOLERANCES, force_truth: bool = False,
                             progress: bool = True) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """(event rows, clip rows) of :func:`localize_clip` over the first ``n_clips`` clips, through the one experiment
    path (kind ``video-localize``: one part per clip, resumed; the model is loaded only when a clip is missing)."""
    import json

    import pandas as pd

    from vlmflow.runner import Experiment, progress_bar, requested
    from vlmflow.sweep_run import sweep_settings
    from vlmflow.toy.clips import DESCRIBE_VIDEO_PROMPT

    data_id, clips = clip_truth(n_clips, seed, data)
    device, dtype = requested(vlm if vlm is not None else str(model), device, dtype)
    settings = sweep_settings(vlm if vlm is not None else str(model), data_id, question=DESCRIBE_VIDEO_PROMPT,
                              max_new_tokens=max_new_tokens, device=device, dtype=dtype,
                              tolerances=[float(t) for t in tolerances], unit="tokens", heads="mean", row="predicting",
                              events=list(LOCALIZED_EVENTS), **({"force_truth": True} if force_truth else {}))
    exp = Experiment(results_dir, settings, kind="video-localize", model=model, vlm=vlm, device=device, dtype=dtype)
    need = exp.missing((key, key, ["rows"]) for key in clips)
    for key, _ in progress_bar(need, "localize clips", progress):
        rows, clip_row = localize_clip(exp.vlm, clips[key], key, max_new_tokens=max_new_tokens, tolerances=tolerances,
                                       force_truth=force_truth)
        exp.store.write_part(key, [{"image": key, "spec_id": "rows", "objects": json.dumps(rows),
                                    "clip_row": json.dumps(clip_row)}])
    stored = exp.rows(list(clips), ["rows"])
    events = pd.DataFrame([r for text in stored.objects for r in json.loads(text)])
    clip_rows = pd.DataFrame([json.loads(text) for text in stored.clip_row])
    for df in (events, clip_rows):
        df.attrs.update(store=str(exp.folder), computed=len(need), data_id=data_id)
    return events, clip_rows


# ---- re-prompting -------------------------------------------------------------------------------------------------

def clip_answer_correct(kind: str, truth: str, answer: str | None) -> bool:
    """Whether a clip question's answer is right: ``count_at_end`` by its first word; the event questions by the
    objects named (the same multiset as the truth's, ``grammar.parse``; "nothing" only for "nothing")."""
    from vlmflow.toy.grammar import NOTHING, parse

    if not isinstance(answer, str):
        return False
    words = answer.strip().lower().split()
    if kind == "count_at_end":
        return bool(words) and words[0] == truth.strip().lower()
    if truth.strip().lower() == NOTHING:
        return bool(words) and words[0] == NOTHING
    named = Counter(parse(answer.lower()))  # objects an answer names may lack a size or colour (None): count, not sort
    return bool(named) and named == Counter(parse(truth.lower()))


def score_clip_answers(answers: "pd.DataFrame") -> "pd.DataFrame":
    """``answers`` (``reprompt.stored_evaluate`` rows of clip data) with ``correct`` (:func:`clip_answer_correct`)."""
    return answers.assign(correct=[float(clip_answer_correct(k, t, a))
                                   for k, t, a in zip(answers.kind, answers.truth, answers.answer)])


__all__ = ["CLIP_DATA", "DEFAULT_TOLERANCES", "FRAME_KO_TARGET", "LOCALIZED_EVENTS", "VideoAnalysisError",
           "clip_answer_correct", "clip_configs", "clip_truth", "event_mentions", "frame_configs", "frame_geometry",
           "frame_key_share", "frame_mass", "frame_mass_table", "frames_of_image_tokens", "localize_clip",
           "score_clip_answers", "split_by_frame", "stored_clip_localization", "stored_clip_sweep"]
