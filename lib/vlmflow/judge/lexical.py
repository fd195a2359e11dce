"""The lexical judge and CHAIR: COCO objects found by words, for English descriptions of COCO images, no network.

Objects are the 80 COCO categories, found through the CHAIR synonym lists (Rohrbach et al., EMNLP 2018; the files
`chair/synonyms.txt`, `chair/chair_rules.json`, `chair/coco_categories.json` of the data folder, read through
`vlmflow.data`). Two rules find them, by name:

- ``"chair"``: CHAIR's own rule, decision by decision (`vlmflow.judge.chair_words`): NLTK-style tokens, Pattern's
  singular forms (so "bus" and "ties" are never found, as in CHAIR), CHAIR's double words only.
- ``"vlmflow"`` (`Vocabulary`): our improvements, used by the lexical judge:
  1. lower-case, split into words and punctuation (hyphens and possessive 's dropped: "hot-dog" is a hot dog);
  2. greedy longest match of phrases (up to 3 words, never across punctuation: "it was hot, dogs slept" finds a
     dog, not a hot dog) against every synonym, in singular or plural form ("buses", "bus" and "ties" all count;
     "stove top oven" and the synonym lists' spacing slips such as " motor bike" are read as meant);
  3. CHAIR's word rules: "baby <animal>" / "adult <animal>" -> the animal, "passenger <jet|train>" -> the
     vehicle, "bow tie" -> tie, "toilet seat" -> toilet, and a "seat" in a description that names a toilet is
     the toilet's seat, not a chair; CHAIR's blocking phrases ("train track", "home plate", "baby animal") name no
     object and hide their words ("a train track" is no train, "a baby animal" no person).

`chair(captions, ground_truth, rule="chair")` computes CHAIR by CHAIR's counting: every **mention** counts (CHAIRi =
hallucinated mentions / all mentions over all captions; CHAIRs = share of captions with a hallucinated mention).
The judge (`LexicalJudge`) counts **sets** instead: a category counts once per description however often it is
mentioned ("two dogs ... the dog" is one `dog`), because word mentions cannot tell new objects from repeated
references; TP = categories in both, FN = reference only, FP = candidate only. `details["mentions"]` keeps, per
side, the words that produced each category.

Known limits (inherited from CHAIR's lists): word senses are ignored ("an orange shirt" finds the fruit, "bow"
is a tie), and objects outside the 80 categories (a window, a tree) are invisible.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from vlmflow.judge.base import Judge, JudgeError, Judgment
from vlmflow.judge.matching import match_by_key

MAX_PHRASE = 3
RULES = ("chair", "vlmflow")
_TOKEN_RE = re.compile(r"[a-z]+|[^\sa-z\-'\u2019]")  # words, and punctuation (a phrase boundary)
_BLOCK = ""  # a phrase that names no COCO object and hides its words
_IRREGULAR_PLURALS = {
    "person": ["people", "persons"], "man": ["men"], "woman": ["women"], "child": ["children"],
    "grandchild": ["grandchildren"], "gentleman": ["gentlemen"], "policeman": ["policemen"],
    "serviceman": ["servicemen"], "mouse": ["mice"], "goose": ["geese"], "ox": ["oxen"], "sheep": ["sheep"],
    "fowl": ["fowl"], "cattle": ["cattle"], "bison": ["bison"], "buffalo": ["buffaloes", "buffalos", "buffalo"],
    "knife": ["knives"], "pocketknife": ["pocketknives"], "calf": ["calves"], "scissors": ["scissors"],
    "skis": ["skis"], "people": ["peoples"], "children": [], "oxen": [], "cactus": ["cacti"],
}


def chair_dir() -> Path:
    """The folder with the CHAIR files, from the one data resolver (``vlmflow.data.fetch("chair")``: ../shared beside
    the checkout, $VLMFLOW_DATA, or the user cache filled from the public sources, checksums verified)."""
    from vlmflow.data import fetch

    return Path(fetch("chair", progress=False))


def plural_forms(word: str) -> list[str]:
    """English plural(s) of a (singular) noun from the synonym lists; irregulars listed explicitly."""
    if word in _IRREGULAR_PLURALS:
        return list(_IRREGULAR_PLURALS[word])
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return [word + "es"]
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return [word[:-1] + "ies"]
    if word.endswith("o"):
        return [word + "s", word + "es"]  # tomatoes, but also photos: accept both
    if word.endswith("fe"):
        return [word + "s", word[:-2] + "ves"]
    return [word + "s"]


def token_spans(text: str) -> list[tuple[str, int]]:
    """(token, char offset) of the words (hyphens split, possessive 's dropped) and punctuation marks of `text`."""
    low = text.lower().replace("'s", "  ").replace("\u2019s", "  ")  # same length: offsets stay valid
    return [(m.group(), m.start()) for m in _TOKEN_RE.finditer(low)]


def words(text: str) -> list[str]:
    return [t for t, _ in token_spans(text) if t.isalpha()]


class Vocabulary:
    """Surface phrase (tuple of words) -> COCO category, built from the CHAIR files in `folder`."""

    def __init__(self, folder: str | Path | None = None):
        folder = Path(folder) if folder is not None else chair_dir()
        try:
            synonym_lines = (folder / "synonyms.txt").read_text().splitlines()
            rules = json.loads((folder / "chair_rules.json").read_text())
            categories = [c["name"] for c in json.loads((folder / "coco_categories.json").read_text())]
        except (OSError, ValueError, KeyError) as exc:
            raise JudgeError(f"cannot read the CHAIR word lists in {folder}: {exc}") from exc
        self.categories = tuple(categories)
        phrases: dict[tuple[str, ...], str] = {}
        for n, line in enumerate(synonym_lines, 1):
            items = [" ".join(s.lower().split()) for s in line.split(",") if s.strip()]
            if not items:
                continue
            category = items[0]
            if category not in categories:
                raise JudgeError(f"{folder / 'synonyms.txt'} line {n}: {category!r} is not a COCO category")
            for synonym in items:
                phrases[tuple(synonym.split())] = category
        # CHAIR's double-word rules (chair_rules.json) on top of the synonym phrases.
        for animal in rules["animal_words"]:
            target = phrases.get((animal,), animal)
            for prefix in ("baby", "adult"):
                phrases[(prefix, animal)] = target
        for vehicle in rules["vehicle_words"]:
            phrases[("passenger", vehicle)] = phrases.get((vehicle,), vehicle)
        for source, target in rules["double_word_rules"]["explicit"].items():
            phrases[tuple(source.split())] = phrases.get(tuple(target.split()), target)
        for double in rules["coco_double_words"]:
            key = tuple(double.split())
            phrases.setdefault(key, phrases.get(key, double))
        # CHAIR's double words that name no category block their words ("train track", "baby animal")
        phrases = {k: (v if v in categories else _BLOCK) for k, v in phrases.items()}
        # Surface forms: every phrase as given and with its last word in plural.
        self.surface: dict[tuple[str, ...], str] = {}
        for phrase, category in phrases.items():
            self.surface.setdefault(phrase, category)
            for plural in plural_forms(phrase[-1]):
                self.surface.setdefault(phrase[:-1] + (plural,), category)
        for phrase, category in phrases.items():  # a listed phrase always wins over a generated plural
            self.surface[phrase] = category

    def matches(self, text: str) -> list[tuple[str, str, int]]:
        """(category, surface words, char offset of the phrase's last word) for every object mention, in order."""
        toks, out, i = token_spans(text), [], 0
        while i < len(toks):
            run = 0  # words up to the next punctuation mark: no phrase crosses it
            while run < min(MAX_PHRASE, len(toks) - i) and toks[i + run][0].isalpha():
                run += 1
            for n in range(run, 0, -1):
                phrase = tuple(t for t, _ in toks[i:i + n])
                category = self.surface.get(phrase)
                if category is not None:
                    if category != _BLOCK:
                        out.append((category, " ".join(phrase), toks[i + n - 1][1]))
                    i += n
                    break
            else:
                i += 1
        # CHAIR: "the seat of the toilet" names the toilet, not a chair.
        if any(c == "toilet" for c, _, _ in out):
            out = [m for m in out if not (m[0] == "chair" and m[1] in ("seat", "seats"))]
        return out

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(category, surface words) for every object mention in `text`, in order."""
        return [(c, w) for c, w, _ in self.matches(text)]

    def objects(self, text: str) -> tuple[list[str], dict[str, list[str]]]:
        """Categories in order of first mention (a set), and the words that named each."""
        found: dict[str, list[str]] = {}
        for category, surface in self.mentions(text):
            found.setdefault(category, []).append(surface)
        return list(found), found


@lru_cache(maxsize=4)
def _vocabulary(folder: str | None) -> Vocabulary:
    return Vocabulary(folder)


class LexicalJudge(Judge):
    name = "lexical"
    version = "2"  # 2: CHAIR's blocking phrases kept, no phrase across punctuation

    def __init__(self, chair_folder: str | Path | None = None):
        self.vocabulary = _vocabulary(str(chair_folder) if chair_folder is not None else None)

    def judge(self, reference: str, candidate: str) -> Judgment:
        ref, ref_words = self.vocabulary.objects(reference)
        cand, cand_words = self.vocabulary.objects(candidate)
        tp, fp, fn = match_by_key(ref, cand)
        return Judgment.from_matching(ref, cand, tp, fp, fn,
                                      details={"mentions": {"reference": ref_words, "candidate": cand_words},
                                               "counting": "sets"})


# ---------------------------------------------------------------------------------------------------------------
# CHAIR (Rohrbach et al., EMNLP 2018)

@dataclass(frozen=True)
class ChairCaption:
    caption: str
    objects: tuple[str, ...]  # the category of every mention, in order (repeats kept)
    hallucinated: tuple[tuple[str, str], ...]  # (word, category) of every mention not in the ground truth
    chair_s: int  # 1 if any mention is hallucinated
    chair_i: float  # hallucinated mentions / mentions (0 without mentions, as CHAIR)


@dataclass(frozen=True)
class ChairScore:
    """CHAIRs = share of captions with a hallucinated mention; CHAIRi = hallucinated mentions / all mentions, pooled
    over the captions (NaN when no caption mentions an object: CHAIR's script divides by zero)."""

    chair_s: float
    chair_i: float
    n_captions: int
    n_mentions: int
    n_hallucinated: int
    rule: str
    per_caption: tuple[ChairCaption, ...]


@lru_cache(maxsize=4)
def _finder(rule: str, folder: str | None):
    if rule not in RULES:
        raise JudgeError(f"unknown CHAIR rule {rule!r}; choose one of {', '.join(RULES)}")
    if rule == "vlmflow":
        return _vocabulary(folder)
    from vlmflow.judge.chair_words import ChairWords

    return ChairWords(Path(folder) if folder is not None else chair_dir())


def _by_position(name: str, values, keys: list | None):
    if isinstance(values, Mapping):
        if keys is None:
            raise JudgeError(f"{name} is a mapping: give the captions as a mapping too (same keys)")
        missing = [k for k in keys if k not in values]
        if missing:
            raise JudgeError(f"{name} has no entry for caption {missing[0]!r}")
        return [values[k] for k in keys]
    return list(values)


def chair_objects(text: str, rule: str = "chair", chair_folder: str | Path | None = None) -> list[tuple[str, str]]:
    """(category, word) for every object mention of `text` under the named rule ("chair" or "vlmflow")."""
    return _finder(rule, str(chair_folder) if chair_folder is not None else None).mentions(text)


def chair_ground_truth(categories: Iterable[str], reference_captions: Iterable[str] = (), rule: str = "chair",
                       chair_folder: str | Path | None = None) -> set[str]:
    """CHAIR's ground truth of one image: its annotated categories plus the objects its reference (human) captions
    name, found with the same rule."""
    out = set(categories)
    for caption in reference_captions:
        out.update(c for c, _ in chair_objects(caption, rule, chair_folder))
    return out


def chair(captions: Sequence[str] | Mapping, ground_truth: Sequence[Iterable[str]] | Mapping,
          rule: str = "chair", chair_folder: str | Path | None = None) -> ChairScore:
    """CHAIRs and CHAIRi of generated captions against each image's ground-truth COCO categories (parallel lists,
    or two mappings with the same keys; `chair_ground_truth` builds CHAIR's ground truth). `rule`: "chair"
    (CHAIR's own words, default: comparable with published CHAIR numbers) or "vlmflow" (our improvements; module
    docstring). Counting is CHAIR's: every mention."""
    finder = _finder(rule, str(chair_folder) if chair_folder is not None else None)
    keys = list(captions) if isinstance(captions, Mapping) else None
    texts = [captions[k] for k in keys] if keys is not None else list(captions)
    truths = _by_position("ground_truth", ground_truth, keys)
    if len(truths) != len(texts):
        raise JudgeError(f"{len(texts)} captions but {len(truths)} ground-truth sets")
    categories = set(_vocabulary(str(chair_folder) if chair_folder is not None else None).categories)
    rows = []
    for i, (text, truth) in enumerate(zip(texts, truths)):
        truth = set(truth)
        unknown = sorted(truth - categories)
        if unknown:
            raise JudgeError(f"ground truth of caption {keys[i] if keys else i!r}: {unknown[0]!r} is not a COCO "
                             "category")
        found = finder.mentions(text or "")
        wrong = tuple((w, c) for c, w in found if c not in truth)
        rows.append(ChairCaption(text, tuple(c for c, _ in found), wrong, int(bool(wrong)),
                                 len(wrong) / len(found) if found else 0.0))
    if not rows:
        raise JudgeError("no captions to score")
    mentions = sum(len(r.objects) for r in rows)
    hallucinated = sum(len(r.hallucinated) for r in rows)
    return ChairScore(chair_s=sum(r.chair_s for r in rows) / len(rows),
                      chair_i=hallucinated / mentions if mentions else math.nan, n_captions=len(rows),
                      n_mentions=mentions, n_hallucinated=hallucinated, rule=rule, per_caption=tuple(rows))
