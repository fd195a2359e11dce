"""The toy description grammar: canonical text for a list of objects, a tolerant parser back to objects, and
exact precision/recall/F1 between object multisets.

Canonical form (``describe``): each object as ``size color shape``, joined by `` , ``, in the order given
(scenes pass reading order), e.g. ``large red circle , small blue ring`` ; no objects -> ``nothing``.
This is the training target of the toy model for ``describe the image`` and the caption in the COCO output.

``parse`` reads any text (model output, a paraphrase) and returns the multiset of objects it names: a phrase
ends at a shape word (singular or plural); the size / colour words seen since the previous shape fill the
attributes (``None`` when missing, so the object counts as named but can never match exactly). Number
words before a plural (``two red circles``) repeat the object. Unknown words, punctuation, repeats and a
truncated last phrase (no shape yet) are tolerated. ``parse`` and ``score`` are pure and fast: the exact
judge (``vlmflow.judge``) builds on them.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from vlmflow.toy.scenes import COLORS, SHAPES, SIZES, ToyObject

SEPARATOR = " , "
NOTHING = "nothing"

_SHAPE_WORDS = {s: s for s in SHAPES} | {s + "s": s for s in SHAPES} | {"crosses": "cross"}
_COLOR_WORDS = {c: c for c in COLORS} | {"violet": "purple"}
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small",
               "large": "large", "big": "large", "huge": "large"}
_NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                 "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}
_BREAK_WORDS = {",", ".", ";", "and", "with", "a", "an", "the"}
_WORD_RE = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")

assert set(SIZES) == set(_SIZE_WORDS.values())


def describe(objects) -> str:
    """Canonical description of ``objects`` (iterable of ToyObject) in the order given."""
    objects = list(objects)
    if not objects:
        return NOTHING
    return SEPARATOR.join(f"{o.size} {o.color} {o.shape}" for o in objects)


def parse(text: str) -> list[ToyObject]:
    """Objects named in ``text``, in order of mention (a multiset: repeats are kept)."""
    out: list[ToyObject] = []
    size = color = None
    count = 1
    for w in _WORD_RE.findall(text.lower()):
        if w in _SHAPE_WORDS:
            out.extend([ToyObject(_SHAPE_WORDS[w], color, size)] * count)
            size = color = None
            count = 1
        elif w in _COLOR_WORDS:
            color = _COLOR_WORDS[w]
        elif w in _SIZE_WORDS:
            size = _SIZE_WORDS[w]
        elif w in _NUMBER_WORDS or w.isdigit():
            count = max(1, min(_NUMBER_WORDS.get(w) or int(w), 64))
        elif w in _BREAK_WORDS:
            # a new phrase starts: attributes do not leak across "red , circle" etc.
            if w in {",", ".", ";", "and"}:
                size = color = None
                count = 1
    return out


@dataclass(frozen=True)
class Score:
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float


def score(reference_objects, candidate_objects) -> Score:
    """Exact-triple multiset match. Conventions: both empty -> P = R = F1 = 1; an empty candidate has
    precision 1 (it claims nothing false) and an empty reference has recall 1."""
    ref, cand = Counter(reference_objects), Counter(candidate_objects)
    tp = sum((ref & cand).values())
    n_ref, n_cand = sum(ref.values()), sum(cand.values())
    fp, fn = n_cand - tp, n_ref - tp
    precision = tp / n_cand if n_cand else 1.0
    recall = tp / n_ref if n_ref else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    if n_ref and n_cand == 0:
        f1 = 0.0
    if n_cand and n_ref == 0:
        f1 = 0.0
    return Score(tp, fp, fn, precision, recall, f1)


def vocabulary() -> list[str]:
    """Every word the canonical grammar can emit."""
    return [*SIZES, *COLORS, *SHAPES, ",", NOTHING]


def unknown_words(text: str) -> list[str]:
    """The words of ``text`` (as ``parse`` splits it) that neither ``parse`` reads nor the toy model can say, in
    order of first appearance: ``parse`` skips them silently, so a judge built on it must refuse such text (``"a
    cat"`` would otherwise parse to no object and match ``"a dog"`` perfectly). Digits are numbers."""
    from vlmflow.toy.model import vocabulary as model_vocabulary

    known = {w.lower() for w in model_vocabulary()} | set(_SHAPE_WORDS) | set(_COLOR_WORDS) | set(_SIZE_WORDS) \
        | set(_NUMBER_WORDS) | _BREAK_WORDS
    out: list[str] = []
    for w in _WORD_RE.findall(text.lower()):
        if w not in known and not w.isdigit() and w not in out:
            out.append(w)
    return out


def write_chair_lists(folder) -> "Path":
    """The toy world's objects as CHAIR-format word lists (``synonyms.txt``, ``chair_rules.json``,
    ``coco_categories.json``) in ``folder``, so that the lexical judge reads toy descriptions:
    ``get_judge("lexical", chair_folder=folder)``. Each shape is a category (plurals are added by the judge); colours
    and sizes are not objects, as in the paper's protocol. Used to validate the lexical judge's rules (objects named
    by words, counted as sets) against the exact judge on toy scenes. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "synonyms.txt").write_text("".join(f"{s}\n" for s in SHAPES))
    (folder / "coco_categories.json").write_text(json.dumps([{"id": i + 1, "name": s} for i, s in enumerate(SHAPES)]))
    (folder / "chair_rules.json").write_text(json.dumps({"animal_words": [], "vehicle_words": [],
                                                         "double_word_rules": {"explicit": {}},
                                                         "coco_double_words": []}))
    return folder
