"""The toy video world: clips of 2-4 frames of toy scenes in which objects appear, disappear, move or change colour,
with exact per-frame ground truth.

A clip starts as a toy scene (``scenes.py``: objects in distinct grid cells, exact masks) and changes by exactly one
event between consecutive frames:

- ``appear``: a new object (a fresh track) in a free cell;
- ``disappear``: one object leaves (never the last one);
- ``move``: one object jumps to a free cell (same shape, colour and size);
- ``recolor``: one object keeps its place and takes another colour.

Every object keeps a ``track`` id for the whole clip, so the ground truth of frame ``k`` is the list of tracks visible
in it. Frames share one background (clutter is drawn from the clip's entropy), as the frames of one video do.

Text (``describe_clip``) is the first frame's canonical description (``grammar.describe``) followed by one clause per
event, in order, e.g. ``small red circle , large blue ring . then a small green cross appears . then the large blue
ring turns yellow . then the small red circle moves to the top left``. ``parse_clip`` reads such text back into facts and ``score_clip`` gives precision, recall and F1
over the facts (the first frame's objects and the events), the clip analogue of ``grammar.score``.

``clip_questions`` asks about a clip with exact answers (describe the video, what appeared / disappeared / moved /
changed colour, how many objects at the end); ``write_clips`` writes clips as COCO (frames as images with a
``video_id`` and ``frame_index``, annotations with a ``track_id``, plus ``videos``, ``captions`` and ``questions``),
the format the ``vlmflow toy clips`` command writes and the data layer reads.

Determinism: clip ``i`` of split ``s`` with seed ``k`` is drawn from ``SeedSequence([k, SPLIT_CODES[s], i,
CLIP_STREAM])``; the extra word keeps clip streams disjoint from the scene streams of the same seed and index.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from vlmflow.atomic import atomic_write_json
from vlmflow.toy.grammar import NOTHING, Score, describe, parse, score
from vlmflow.toy.questions import NUMBER_WORDS
from vlmflow.toy.scenes import (
    COLORS,
    OVERLAP_TOLERANCE_PX,
    POSITIONS,
    SHAPES,
    SceneConfig,
    SceneConfigError,
    SceneObject,
    ToyObject,
    place_object,
    random_object,
    render,
    scene_seed,
)

CLIP_STREAM = 1  # fourth entropy word of every clip (scenes use three words)
EVENT_KINDS = ("appear", "disappear", "move", "recolor")
DESCRIBE_VIDEO_PROMPT = "describe the video"
EVENT_SEPARATOR = " . then "
# The question each event kind answers ("what appeared ?" -> the objects that appeared, as they looked then).
EVENT_QUESTIONS = {
    "appear": "what appeared ?",
    "disappear": "what disappeared ?",
    "move": "what moved ?",
    "recolor": "what changed color ?",
}
COUNT_AT_END_QUESTION = "how many objects at the end ?"
EVENT_VERBS = {"appear": "appears", "disappear": "disappears", "move": "moves", "recolor": "turns"}


@dataclass(frozen=True)
class ClipConfig:
    """The clip distribution: frames per clip and the scene settings of every frame (``scene.max_objects`` also
    bounds the objects visible at once, so ``appear`` needs room)."""

    min_frames: int = 2
    max_frames: int = 4
    scene: SceneConfig = SceneConfig()

    def __post_init__(self):
        if not 2 <= self.min_frames <= self.max_frames:
            raise SceneConfigError(f"need 2 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.scene.min_objects < 1:
            raise SceneConfigError("clips need at least one object per frame (scene.min_objects >= 1)")


@dataclass(frozen=True)
class Track:
    """One object of a clip as it is in one frame."""

    track: int
    placed: SceneObject = field(compare=False)

    @property
    def object(self) -> ToyObject:
        return self.placed.object


@dataclass(frozen=True)
class Event:
    """The change between frame ``frame - 1`` and frame ``frame``. ``object`` is the track as it looked before the
    change (for ``appear``: as it appears); ``new_color`` is set for ``recolor``, ``position`` (the new position
    word) for ``move``."""

    frame: int
    kind: str
    track: int
    object: ToyObject
    new_color: str | None = None
    position: str | None = None

    def fact(self) -> tuple:
        """What the text states about the event, compared by ``score_clip``: kind, object, and the new colour
        (``recolor``) or the new position word (``move``)."""
        return (self.kind, self.object, self.new_color or self.position)

    def clause(self) -> str:
        o = self.object
        article = "a" if self.kind == "appear" else "the"
        words = [article, o.size, o.color, o.shape, EVENT_VERBS[self.kind]]
        if self.kind == "recolor":
            words.append(self.new_color)
        elif self.kind == "move":
            words += ["to", "the", self.position]
        return " ".join(words)

    def to_dict(self) -> dict:
        d = {"frame_index": self.frame, "kind": self.kind, "track_id": self.track,
             "object": {"shape": self.object.shape, "color": self.object.color, "size": self.object.size}}
        if self.new_color is not None:
            d["new_color"] = self.new_color
        if self.position is not None:
            d["position"] = self.position
        return d


@dataclass
class Clip:
    seed: tuple[int, ...]
    frames: list[list[Track]]  # per frame, the visible tracks in reading (cell) order
    events: list[Event]  # len(frames) - 1, events[k] leads to frame k + 1
    images: list[Image.Image]

    @property
    def description(self) -> str:
        return describe_clip(self)


def clip_seed(seed: int, split: str, index: int) -> tuple[int, int, int, int]:
    return (*scene_seed(seed, split, index), CLIP_STREAM)


def make_clip(seed: int, split: str = "train", index: int = 0, config: ClipConfig = ClipConfig()) -> Clip:
    """Clip ``index`` of ``split`` for ``seed``: the same arguments always give the same frames and events."""
    entropy = clip_seed(seed, split, index)
    rng = np.random.default_rng(np.random.SeedSequence(list(entropy)))
    sc = config.scene
    n_frames = int(rng.integers(config.min_frames, config.max_frames + 1))
    n = int(rng.integers(sc.min_objects, sc.max_objects + 1))
    cells = np.sort(rng.choice(sc.cells ** 2, size=n, replace=False))
    tracks = [Track(t, place_object(random_object(rng), int(c), rng, sc)) for t, c in enumerate(cells)]
    frames, events = [tracks], []
    for k in range(1, n_frames):
        tracks, event = _next_frame(frames[-1], k, rng, sc, next_track=1 + max(t.track for f in frames for t in f))
        frames.append(tracks)
        events.append(event)
    images = [render([t.placed for t in f], sc, entropy) for f in frames]
    return Clip(entropy, frames, events, images)


def _next_frame(tracks: list[Track], frame: int, rng: np.random.Generator, sc: SceneConfig,
                next_track: int) -> tuple[list[Track], Event]:
    free = sorted(set(range(sc.cells ** 2)) - {t.placed.cell for t in tracks})
    possible = [k for k in EVENT_KINDS if (k != "appear" or (free and len(tracks) < sc.max_objects))
                and (k != "disappear" or len(tracks) > max(1, sc.min_objects))
                and (k != "move" or free)]
    kind = possible[int(rng.integers(len(possible)))]
    if kind == "appear":
        new = Track(next_track, place_object(random_object(rng), free[int(rng.integers(len(free)))], rng, sc))
        return _reading_order([*tracks, new]), Event(frame, kind, new.track, new.object)
    i = int(rng.integers(len(tracks)))
    old = tracks[i]
    rest = tracks[:i] + tracks[i + 1:]
    if kind == "disappear":
        return rest, Event(frame, kind, old.track, old.object)
    if kind == "move":
        moved = place_object(old.object, free[int(rng.integers(len(free)))], rng, sc)
        return (_reading_order([*rest, Track(old.track, moved)]),
                Event(frame, kind, old.track, old.object, position=moved.position))
    colors = [c for c in COLORS if c != old.object.color]
    new_color = colors[int(rng.integers(len(colors)))]
    recolored = replace(old.placed, object=replace(old.object, color=new_color))
    return (_reading_order([*rest, Track(old.track, recolored)]),
            Event(frame, kind, old.track, old.object, new_color=new_color))


def _reading_order(tracks: list[Track]) -> list[Track]:
    return sorted(tracks, key=lambda t: t.placed.cell)


def clip_settings_id(config: ClipConfig | None = None) -> str:
    """10 hex digits naming the clip settings (the default config when None): the data id of ``toy-clips-*``
    (``vlmflow.data.resolve``) carries it, so results on clips of another default are never read back."""
    from dataclasses import asdict

    from vlmflow.store import settings_hash

    return settings_hash(asdict(config or ClipConfig()))[:10]


def make_clips(seed: int, n: int, split: str = "train", config: ClipConfig = ClipConfig(), start: int = 0):
    return [make_clip(seed, split, start + i, config) for i in range(n)]


# ---- text ---------------------------------------------------------------------------------------------------------

def describe_clip(clip: Clip) -> str:
    """Canonical clip text: the first frame's description, then one clause per event."""
    first = describe(t.object for t in clip.frames[0])
    return EVENT_SEPARATOR.join([first, *(e.clause() for e in clip.events)])


def parse_clip(text: str) -> tuple[list[ToyObject], list[tuple]]:
    """(first-frame objects, event facts) named in ``text``; tolerant like ``grammar.parse``: a clause whose verb
    or object is missing is dropped, and an unknown recolour target counts as ``None`` (never matches)."""
    parts = re.split(r"\bthen\b", text.lower())
    first = parse(parts[0])
    facts = []
    for part in parts[1:]:
        verb = next((k for k, v in EVENT_VERBS.items() if re.search(rf"\b{v}\b", part)), None)
        if verb is None:
            continue
        before, _, after = part.partition(EVENT_VERBS[verb])
        named = parse(before)
        if not named:
            continue
        detail = None  # an unreadable target stays None and never matches
        if verb == "recolor":
            detail = next((w for w in re.findall(r"[a-z]+", after) if w in COLORS), None)
        elif verb == "move":  # the longest position word named ("top left" before "top")
            detail = max((p for p in POSITIONS if re.search(rf"\b{p}\b", after)), key=len, default=None)
        facts.append((verb, named[0], detail))
    return first, facts


def clip_facts(clip: Clip) -> tuple[list[ToyObject], list[tuple]]:
    return [t.object for t in clip.frames[0]], [e.fact() for e in clip.events]


FACT_FAMILIES = ("object", *EVENT_KINDS)  # what a clip description states: first-frame objects, then each event kind


def recall_by_family(pairs) -> dict[str, float | None]:
    """Pooled recall of each fact family (``FACT_FAMILIES``) over (reference, candidate) fact pairs of many clips
    (``clip_facts``, ``parse_clip``): the share of the reference's objects, and of its events of each kind, that the
    candidate states exactly (multisets, as ``score_clip``); None for a family no reference has. Where ``score_clip``
    gives one F1 per clip, this says which facts a describer misses."""
    from collections import Counter

    hit, total = Counter(), Counter()
    for (ref_objects, ref_events), (can_objects, can_events) in pairs:
        for family in FACT_FAMILIES:
            ref = Counter(ref_objects if family == "object" else [e for e in ref_events if e[0] == family])
            can = Counter(can_objects if family == "object" else [e for e in can_events if e[0] == family])
            total[family] += sum(ref.values())
            hit[family] += sum((ref & can).values())
    return {f: round(hit[f] / total[f], 4) if total[f] else None for f in FACT_FAMILIES}


def score_clip(reference: tuple[list[ToyObject], list[tuple]], candidate: tuple[list[ToyObject], list[tuple]]) -> Score:
    """Precision, recall and F1 over the multiset of facts (each first-frame object and each event counts once),
    with ``grammar.score``'s conventions for empty sides."""
    def facts(objects_events):
        objects, events = objects_events
        return [("object", o) for o in objects] + [("event", e) for e in events]

    return score(facts(reference), facts(candidate))


# ---- questions ----------------------------------------------------------------------------------------------------

def clip_questions(clip: Clip) -> list[dict]:
    """The full deterministic question set of a clip, with exact answers: describe, one question per event kind
    (``nothing`` when that kind did not happen), and the count at the end."""
    qas = [{"kind": "describe_video", "question": DESCRIBE_VIDEO_PROMPT, "answer": describe_clip(clip)}]
    for kind, question in EVENT_QUESTIONS.items():
        objects = [e.object for e in clip.events if e.kind == kind]
        qas.append({"kind": kind, "question": question, "answer": describe(objects) if objects else NOTHING})
    qas.append({"kind": "count_at_end", "question": COUNT_AT_END_QUESTION,
                "answer": NUMBER_WORDS[len(clip.frames[-1])]})
    return qas


def vocabulary() -> list[str]:
    """Words the clip texts and questions use beyond the scene grammar's (a video toy model's tokenizer adds
    them)."""
    words = {"then", ".", "a", "the", "to", "video", *EVENT_VERBS.values(), *" ".join(POSITIONS).split()}
    for q in (DESCRIBE_VIDEO_PROMPT, COUNT_AT_END_QUESTION, *EVENT_QUESTIONS.values()):
        words.update(q.split())
    return sorted(words)


# ---- COCO output --------------------------------------------------------------------------------------------------

def to_coco(clips: list[Clip], file_names: list[list[str]], info: dict | None = None) -> dict:
    """COCO dict of clips: every frame an image (``video_id``, ``frame_index``), every visible object in a frame an
    annotation (exact RLE mask, ``track_id``, ``frame_index``, colour, size, position), ``videos`` (frame files and
    events), and per video a caption and the questions (``video_id`` instead of ``image_id``)."""
    from pycocotools import mask as mask_utils

    cat_id = {s: i + 1 for i, s in enumerate(SHAPES)}
    images, anns, videos, caps, qas = [], [], [], [], []
    for v, (clip, names) in enumerate(zip(clips, file_names, strict=True), start=1):
        for k, (frame, name) in enumerate(zip(clip.frames, names, strict=True)):
            image_id = len(images) + 1
            W, H = clip.images[k].size
            images.append({"id": image_id, "file_name": name, "width": W, "height": H, "video_id": v,
                           "frame_index": k})
            for t in frame:
                rle = mask_utils.encode(np.asfortranarray(t.placed.mask.astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                anns.append({"id": len(anns) + 1, "image_id": image_id, "video_id": v, "frame_index": k,
                             "track_id": t.track, "category_id": cat_id[t.object.shape], "segmentation": rle,
                             "area": int(t.placed.mask.sum()), "bbox": list(t.placed.bbox), "iscrowd": 0,
                             "color": t.object.color, "size": t.object.size, "position": t.placed.position})
        videos.append({"id": v, "file_names": list(names), "n_frames": len(clip.frames), "seed": list(clip.seed),
                       "events": [e.to_dict() for e in clip.events]})
        caps.append({"id": v, "video_id": v, "caption": describe_clip(clip)})
        for q in clip_questions(clip):
            qas.append({"id": len(qas) + 1, "video_id": v, **q})
    return {"info": info or {}, "videos": videos, "images": images, "annotations": anns,
            "categories": [{"id": cat_id[s], "name": s, "supercategory": "shape"} for s in SHAPES],
            "captions": caps, "questions": qas}


def write_clips(out_dir: str | os.PathLike, seed: int, n: int, split: str = "test", config: ClipConfig = ClipConfig(),
                progress: bool = True) -> Path:
    """Write ``out_dir/instances.json`` and ``out_dir/frames/<split>_<clip>_f<k>.png``; returns the json path."""
    from dataclasses import asdict

    from tqdm import tqdm

    from vlmflow.progress import bar_disabled

    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    clips, names = [], []
    for i in tqdm(range(n), desc=f"toy clips ({split})", disable=bar_disabled(progress)):
        clip = make_clip(seed, split, i, config)
        frame_names = [f"{split}_{i:06d}_f{k}.png" for k in range(len(clip.images))]
        for image, name in zip(clip.images, frame_names, strict=True):
            image.save(out / "frames" / name)
        clips.append(clip)
        names.append(frame_names)
    info = {"description": "vlmflow toy clips", "seed": seed, "split": split, "n": n, "config": asdict(config),
            "overlap_tolerance_px": OVERLAP_TOLERANCE_PX}
    return atomic_write_json(out / "instances.json", to_coco(clips, names, info))
