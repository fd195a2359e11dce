"""COCO objects in a caption by CHAIR's own rule (Rohrbach et al., EMNLP 2018), for `vlmflow.judge.lexical.chair`.

CHAIR's rule, step by step (its ``CHAIR.caption_to_words``), as this module applies it:
  1. lower-case and split into tokens as NLTK's ``word_tokenize`` does (Punkt sentences, then Treebank words:
     punctuation is its own token, "dog's" -> "dog" "'s", "can't" -> "ca" "n't", "hot-dog" and "cat/dog" stay one
     token, a sentence's final period is split off);
  2. each token's singular form by Pattern 3.6's ``singularize`` ("dogs" -> "dog", "people" -> "person", but also
     "bus" -> "bu", "ties" -> "ty", "glass" -> "glas", so those words never count);
  3. two adjacent tokens that form one of CHAIR's double words become it: "hot dog", "teddy bear", "baby elephant"
     -> "elephant", "passenger jet" -> "jet", "bow tie" -> "tie", "toilet seat" -> "toilet", and "train track",
     "home plate", "baby animal" -> "animal", which are no COCO object and so **block** their words ("a baby animal"
     is no person). A punctuation token between two words stops a double word ("hot, dogs" is a dog);
  4. a "seat" in a caption that names a toilet is dropped;
  5. the tokens that are CHAIR synonyms (its ``data/synonyms.txt`` split as it splits it, so " motor bike" keeps
     its leading space and never matches, and "iPhone" keeps its capital) name their COCO category.

Step 2 uses a table of Pattern's answers (``chair_singular.json`` beside this file: every word whose singular form
Pattern makes a vocabulary word, recorded by ``tests/data/reference/regenerate.py``, which names Pattern's commit);
a word not in the table is not a vocabulary word. Step 1 follows NLTK's rules without its Punkt model: a period
after an abbreviation ("mr.") is split off here and kept by NLTK; that changes no COCO word. The tests compare
every step with CHAIR's own output on recorded captions (``tests/data/reference/chair.json``).
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from vlmflow.judge.base import JudgeError

TABLE = Path(__file__).with_name("chair_singular.json")

# Treebank: characters split from any word; "," and ":" unless a digit follows; "..." and "--" as one token.
_ALWAYS = re.compile(r"(\.\.\.|--|[;@#$%&?!()\[\]{}<>*\"]|[,:](?!\d)|[,:]$)")
_CONTRACTION = re.compile(r"^(.+?)('s|'m|'d|'ll|'re|'ve|n't|')$")
_CLOSERS = set(")]}>\"'") | {"''"}


def tokenize(text: str) -> list[str]:
    """NLTK ``word_tokenize(text.lower())`` as far as COCO words are concerned (module docstring, step 1)."""
    out: list[str] = []
    for chunk in text.lower().split():
        pieces = [p for p in _ALWAYS.split(chunk) if p]
        # double quotes: opening `` at the start of a chunk, closing '' elsewhere (Treebank's convention)
        pieces = [("``" if i == 0 else "''") if p == '"' else p for i, p in enumerate(pieces)]
        # the chunk's last word loses its final periods (a sentence end for Punkt) before closing brackets/quotes,
        # unless it is an abbreviation with inner periods ("u.s.") or a number ("1.")
        last = max((i for i, p in enumerate(pieces) if p not in _CLOSERS), default=None)
        tokens: list[str] = []
        for i, piece in enumerate(pieces):
            if piece in ("``", "''", "..."):
                tokens.append(piece)
                continue
            if piece.startswith("'") and len(piece) > 1 and not re.match(r"'(re|ve|ll|m|t|s|d|n)", piece):
                tokens.append("'")  # an opening single quote
                piece = piece[1:]
            stem = piece.rstrip(".")
            periods = piece[len(stem):] if i == last and stem and "." not in stem and not stem.isdigit() else ""
            piece = piece[:len(piece) - len(periods)]
            if piece == "cannot":
                tokens += ["can", "not"]
            else:
                m = _CONTRACTION.match(piece)
                tokens += [m.group(1), m.group(2)] if m else [piece]
            if periods:
                tokens.append(periods)
        out += tokens
    return out


@lru_cache(maxsize=1)
def _singular_table() -> dict:
    try:
        return json.loads(TABLE.read_text())
    except (OSError, ValueError) as exc:
        raise JudgeError(f"cannot read CHAIR's singular forms {TABLE}: {exc}") from exc


class ChairWords:
    """CHAIR's rule over the CHAIR files in `folder` (``synonyms.txt``, ``chair_rules.json``)."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        try:
            synonym_bytes = (folder / "synonyms.txt").read_bytes()
            synonym_text = synonym_bytes.decode("utf-8")
            rules = json.loads((folder / "chair_rules.json").read_text())
        except (OSError, ValueError) as exc:
            raise JudgeError(f"cannot read the CHAIR word lists in {folder}: {exc}") from exc
        # CHAIR reads the lines with Python's text mode: universal newlines
        synonym_text = synonym_text.replace("\r\n", "\n")
        table = _singular_table()
        digest = hashlib.sha256(synonym_bytes).hexdigest()
        self.objects: set[str] = set()
        self.category: dict[str, str] = {}
        for line in synonym_text.splitlines():
            items = line.strip().split(", ")
            self.objects.update(items)
            for item in items:
                self.category[item] = items[0]
        self.double: dict[str, str] = {w: w for w in rules["coco_double_words"]}
        for animal in rules["animal_words"]:
            self.double[f"baby {animal}"] = self.double[f"adult {animal}"] = animal
        for vehicle in rules["vehicle_words"]:
            self.double[f"passenger {vehicle}"] = vehicle
        self.double.update(rules["double_word_rules"]["explicit"])
        vocabulary = {w for w in self.objects if " " not in w} | {w for k in self.double for w in k.split(" ")}
        if digest != table["source"].get("synonyms_sha256") or vocabulary != set(table["vocabulary"]):
            raise JudgeError(f"{folder / 'synonyms.txt'} is not the CHAIR list that {TABLE.name} was recorded for; "
                             "CHAIR's own rule needs that list (rule='vlmflow' works with any list)")
        self.singular: dict[str, str] = table["singular"]

    def words(self, text: str) -> list[str | None]:
        """Steps 1-3: per token its singular form or double word, None for a token that is no vocabulary word."""
        forms = [self.singular.get(t) for t in tokenize(text)]
        out, i = [], 0
        while i < len(forms):
            pair = f"{forms[i]} {forms[i + 1]}" if i + 1 < len(forms) and forms[i] and forms[i + 1] else None
            if pair in self.double:
                out.append(self.double[pair])
                i += 2
            else:
                out.append(forms[i])
                i += 1
        return out

    def mentions(self, text: str) -> list[tuple[str, str]]:
        """(category, word) for every object mention, in order (steps 4-5)."""
        words = self.words(text)
        if "toilet" in words and "seat" in words:
            words = [w for w in words if w != "seat"]
        return [(self.category[w], w) for w in words if w in self.objects]
