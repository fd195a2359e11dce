"""Question-answer pairs about a toy scene, with exact answers from its ground truth.

Kinds (``QA.kind``):
- ``describe``: ``describe the image`` (the paper's query) -> canonical description (``grammar.describe``);
- ``exists``: MME-style balanced pair per scene, ``is there a {color} {shape} ?`` -> ``yes`` for an object in
  the scene, ``no`` for one that is absent. The negative is a hard negative when possible: same shape with
  another colour, or same colour with another shape (``QA.negative`` says which: ``color``, ``shape``,
  ``random``);
- ``count``: ``how many objects ?`` and ``how many {shape}s ?`` (a shape present in the scene) -> number word;
- ``color``: ``what color is the {shape} ?`` for a shape present exactly once -> colour word;
- ``position``: ``where is the {color} {shape} ?`` for a colour-shape pair present exactly once -> position word
  (``top left`` ... ``bottom right``, see ``scenes.POSITIONS``).

``scene_questions`` gives the full deterministic set for a scene (written to COCO by ``scenes.to_coco``, used by
evaluation and Image Re-prompting); ``sample_question`` draws one question of a given kind for training.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from vlmflow.toy.grammar import describe
from vlmflow.toy.scenes import COLORS, POSITIONS, SHAPES, Scene

DESCRIBE_PROMPT = "describe the image"
KINDS = ("describe", "exists", "count", "color", "position")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen")


@dataclass(frozen=True)
class QA:
    kind: str
    question: str
    answer: str
    negative: str | None = None  # for "exists"/"no": which hard-negative rule produced it

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["negative"] is None:
            d.pop("negative")
        return d


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


# How the "no" question of an exists pair is drawn: ``color`` swaps the colour of a present object (its shape stays),
# ``shape`` swaps the shape (its colour stays), ``random`` is any absent pair. A model that reads only the colour word
# is right on every "yes", the colour swaps and most random pairs, and wrong on the shape swaps.
NEGATIVE_MIX = {"color": 0.35, "shape": 0.35, "random": 0.3}


def exists_pair(scene: Scene, rng: np.random.Generator,
                negatives: dict[str, float] | None = None) -> tuple[QA, QA]:
    """One ``yes`` and one ``no`` question for the scene (a hard negative when one exists); the negative's rule is
    drawn with the shares ``negatives`` (``NEGATIVE_MIX`` by default; normalised)."""
    mix = NEGATIVE_MIX if negatives is None else negatives
    unknown = set(mix) - set(NEGATIVE_MIX)
    if unknown:
        raise ValueError(f"unknown negative rule {sorted(unknown)[0]!r}; choose from {', '.join(NEGATIVE_MIX)}")
    shares = np.array([mix.get(rule, 0.0) for rule in NEGATIVE_MIX], dtype=float)
    present = {(o.color, o.shape) for o in scene.toy_objects}
    target = scene.toy_objects[int(rng.integers(len(scene.toy_objects)))]
    yes = QA("exists", f"is there a {target.color} {target.shape} ?", "yes")
    absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
    same_shape = [(c, s) for c, s in absent if s == target.shape]
    same_color = [(c, s) for c, s in absent if c == target.color]
    rule = tuple(NEGATIVE_MIX)[int(rng.choice(len(shares), p=shares / shares.sum()))]
    pool = {"color": same_shape, "shape": same_color, "random": absent}[rule]
    if not pool:
        rule, pool = "random", absent
    c, s = pool[int(rng.integers(len(pool)))]
    no = QA("exists", f"is there a {c} {s} ?", "no", negative=rule)
    return yes, no


def count_questions(scene: Scene) -> list[QA]:
    objs = scene.toy_objects
    out = [QA("count", "how many objects ?", NUMBER_WORDS[len(objs)])]
    for shape, k in sorted(Counter(o.shape for o in objs).items()):
        out.append(QA("count", f"how many {plural(shape)} ?", NUMBER_WORDS[k]))
    return out


def color_questions(scene: Scene) -> list[QA]:
    counts = Counter(o.shape for o in scene.toy_objects)
    return [QA("color", f"what color is the {o.shape} ?", o.color)
            for o in scene.toy_objects if counts[o.shape] == 1]


def position_questions(scene: Scene) -> list[QA]:
    counts = Counter((o.object.color, o.object.shape) for o in scene.objects)
    return [QA("position", f"where is the {o.object.color} {o.object.shape} ?", o.position)
            for o in scene.objects if counts[(o.object.color, o.object.shape)] == 1]


def scene_questions(scene: Scene) -> list[QA]:
    """All questions for a scene, deterministic for the scene (its seed drives the negative choice)."""
    rng = np.random.default_rng(np.random.SeedSequence([*scene.seed, 7]))
    qs = [QA("describe", DESCRIBE_PROMPT, describe(scene.toy_objects))]
    if scene.objects:
        qs.extend(exists_pair(scene, rng))
    qs.extend(count_questions(scene))
    qs.extend(color_questions(scene))
    qs.extend(position_questions(scene))
    return qs


def sample_question(scene: Scene, kind: str, rng: np.random.Generator,
                    negatives: dict[str, float] | None = None) -> QA:
    """One question of ``kind`` (falls back to ``describe`` when the scene has none of that kind); an exists
    question's negative is drawn with ``negatives`` (``exists_pair``)."""
    if kind == "exists" and scene.objects:
        pair = exists_pair(scene, rng, negatives)
        return pair[int(rng.integers(2))]
    pool = {"count": count_questions, "color": color_questions, "position": position_questions}.get(kind)
    if pool is not None:
        qs = pool(scene)
        if qs:
            return qs[int(rng.integers(len(qs)))]
    return QA("describe", DESCRIBE_PROMPT, describe(scene.toy_objects))


def vocabulary() -> list[str]:
    """Every word a question or answer can use (the tokenizer's vocabulary includes these)."""
    words = {"describe", "the", "image", "is", "there", "a", "how", "many", "objects", "what", "color",
             "where", "?", "yes", "no", *NUMBER_WORDS, *COLORS, *SHAPES, *(plural(s) for s in SHAPES)}
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)
