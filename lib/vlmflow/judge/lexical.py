"""The lexical judge: COCO objects found by words, for English descriptions of COCO images, with no network.

Objects are the 80 COCO categories, found through the CHAIR synonym lists (Rohrbach et al., EMNLP 2018; the files
`chair/synonyms.txt`, `chair/chair_rules.json`, `chair/coco_categories.json` of the data folder, read through
`vlmflow.data`). How a description becomes categories:
  1. lower-case, split into words (hyphens and possessive 's dropped);
  2. greedy longest match of phrases (up to 3 words) against every synonym, in singular or plural form: so
     "hot dog" is a hot dog and not a dog, "teddy bears" a teddy bear and not a bear, "wine glasses" a wine glass;
  3. CHAIR's word rules: "baby <animal>" / "adult <animal>" -> the animal, "passenger <jet|train>" -> the
     vehicle, "bow tie" -> tie, "toilet seat" -> toilet, and a "seat" in a description that names a toilet is
     the toilet's seat, not a chair.
Counting rule (stated, as CHAIR does): **sets**. A category counts once per description however many times or
however many instances it is mentioned ("two dogs ... the dog" is one `dog`), because word mentions cannot tell
new objects from repeated references. TP = categories in both, FN = reference only, FP = candidate only.
`details["mentions"]` keeps, per side, the words that produced each category.

Known limits (inherited from CHAIR's lists): word senses are ignored ("an orange shirt" finds the fruit, "bow"
is a tie), and objects outside the 80 categories (a window, a tree) are invisible.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from vlmflow.judge.base import Judge, JudgeError, Judgment
from vlmflow.judge.matching import match_by_key

MAX_PHRASE = 3
_WORD_RE = re.compile(r"[a-z]+")
_IRREGULAR_PLURALS = {
    "person": ["people", "persons"], "man": ["men"], "woman": ["women"], "child": ["children"],
    "grandchild": ["grandchildren"], "gentleman": ["gentlemen"], "policeman": ["policemen"],
    "serviceman": ["servicemen"], "mouse": ["mice"], "goose": ["geese"], "ox": ["oxen"], "sheep": ["sheep"],
    "fowl": ["fowl"], "cattle": ["cattle"], "bison": ["bison"], "buffalo": ["buffaloes", "buffalos", "buffalo"],
    "knife": ["knives"], "pocketknife": ["pocketknives"], "calf": ["calves"], "scissors": ["scissors"],
    "skis": ["skis"], "people": ["peoples"], "children": [], "oxen": [], "cactus": ["cacti"],
}


def chair_dir() -> Path:
    """The folder with the CHAIR files: `vlmflow.data.fetch("chair")` (checksums verified) when the data layer is
    present, else $VLMFLOW_DATA/chair or /work/shared/data/chair."""
    try:
        from vlmflow.data import fetch
    except ImportError:
        return Path(os.environ.get("VLMFLOW_DATA", "/work/shared/data")) / "chair"
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


def words(text: str) -> list[str]:
    text = text.lower().replace("'s", " ").replace("\u2019s", " ")
    return _WORD_RE.findall(text)


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
            if target in categories or (target,) in phrases:
                phrases[tuple(source.split())] = phrases.get(tuple(target.split()), target)
        for double in rules["coco_double_words"]:
            key = tuple(double.split())
            phrases.setdefault(key, phrases.get(key, double))
        phrases = {k: v for k, v in phrases.items() if v in categories}
        # Surface forms: every phrase as given and with its last word in plural.
        self.surface: dict[tuple[str, ...], str] = {}
        for phrase, category in phrases.items():
            self.surface.setdefault(phrase, category)
            for plural in plural_forms(phrase[-1]):
                self.surface.setdefault(phrase[:-1] + (plural,), category)
        for phrase, category in phrases.items():  # a listed phrase always wins over a generated plural
            self.surface[phrase] = category

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(category, surface words) for every object mention in `text`, in order."""
        toks, out, i = words(text), [], 0
        while i < len(toks):
            for n in range(min(MAX_PHRASE, len(toks) - i), 0, -1):
                category = self.surface.get(tuple(toks[i:i + n]))
                if category is not None:
                    out.append((category, " ".join(toks[i:i + n])))
                    i += n
                    break
            else:
                i += 1
        # CHAIR: "the seat of the toilet" names the toilet, not a chair.
        if any(c == "toilet" for c, _ in out):
            out = [(c, w) for c, w in out if not (c == "chair" and w in ("seat", "seats"))]
        return out

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
    version = "1"

    def __init__(self, chair_folder: str | Path | None = None):
        self.vocabulary = _vocabulary(str(chair_folder) if chair_folder is not None else None)

    def judge(self, reference: str, candidate: str) -> Judgment:
        ref, ref_words = self.vocabulary.objects(reference)
        cand, cand_words = self.vocabulary.objects(candidate)
        tp, fp, fn = match_by_key(ref, cand)
        return Judgment.from_matching(ref, cand, tp, fp, fn,
                                      details={"mentions": {"reference": ref_words, "candidate": cand_words},
                                               "counting": "sets"})
