"""The exact judge for the toy world: objects are (size, colour, shape) triples read by the toy grammar.

Both descriptions go through `vlmflow.toy.grammar.parse` (a multiset of `ToyObject`); objects match only on the
exact triple (an attribute the text leaves out stays None and so never matches a fully named object). The toy
world has exact ground truth, so this judge is the yardstick the LLM and lexical judges are validated against.

`ExactJudge(match_on=("shape",))` matches on a subset of the attributes instead: shape alone is the paper's notion
of an object (its judge ignores colours and sizes), the truth an LLM judge is validated against on toy scenes.

Besides the main judgment, `details["attributes"]` gives a per-attribute breakdown: the same multiset matching on
shape only, colour only and size only (P/R/F1 and counts each), and `details["count"]` the number of objects on
each side. Object names are ``"size colour shape"`` (missing attributes left out).

Text outside the toy world (a word that neither the grammar reads nor the toy model can say, ``grammar.unknown_words``)
is flagged: ``details["unknown_words"]`` lists such words per side, since the grammar skips them (a real model's "The
image shows a red circle" still reads as one red circle). ``ExactJudge(strict=True)`` (what ``vlmflow judge --judge
exact`` uses) refuses such text with a JudgeError naming the words instead: "a cat" vs "a dog" would otherwise score
F1 = 1 (no objects on either side).
"""
from __future__ import annotations

from typing import Any

from vlmflow.judge.base import Judge, Judgment, prf
from vlmflow.judge.matching import match_by_key

ATTRIBUTES = ("shape", "color", "size")


def object_name(obj: Any) -> str:
    return " ".join(str(a) for a in (obj.size, obj.color, obj.shape) if a)


class ExactJudge(Judge):
    name = "exact"
    version = "1"

    def __init__(self, match_on: tuple[str, ...] = ("size", "color", "shape"), strict: bool = False) -> None:
        from vlmflow.judge.base import JudgeError
        from vlmflow.toy import grammar  # lazy: the toy world pulls in its scene renderer

        bad = [a for a in match_on if a not in ATTRIBUTES]
        if bad or not match_on:
            raise JudgeError(f"ExactJudge match_on={tuple(match_on)!r}: name one or more of {', '.join(ATTRIBUTES)}")
        self.match_on = tuple(match_on)
        self.strict = bool(strict)
        self._parse = grammar.parse
        self._unknown = grammar.unknown_words

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "match_on": list(self.match_on), **({"strict": True} if self.strict else {})}

    def judge(self, reference: str, candidate: str) -> Judgment:
        from vlmflow.judge.base import JudgeError

        unknown_words = {"reference": self._unknown(reference), "candidate": self._unknown(candidate)}
        for side, unknown in unknown_words.items():
            if unknown and self.strict:
                shown = ", ".join(repr(w) for w in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
                raise JudgeError(f"the exact judge reads only toy-world descriptions (sizes, colours and shapes such "
                                 f"as 'small red circle'); the {side} has other words: {shown}; the lexical and LLM "
                                 f"judges read free text")
        ref, cand = self._parse(reference), self._parse(candidate)
        tp, fp, fn = match_by_key(ref, cand, key=lambda o: tuple(getattr(o, a) for a in self.match_on))
        return Judgment.from_matching(
            map(object_name, ref), map(object_name, cand),
            [(object_name(r), object_name(c)) for r, c in tp], map(object_name, fp), map(object_name, fn),
            details={"attributes": attribute_scores(ref, cand),
                     "count": {"reference": len(ref), "candidate": len(cand), "equal": len(ref) == len(cand)},
                     "unknown_words": unknown_words},
        )


def attribute_scores(reference: list, candidate: list) -> dict[str, dict[str, float | int]]:
    """Per attribute: one-to-one multiset matching on that attribute alone -> tp/fp/fn and P/R/F1."""
    out = {}
    for attribute in ATTRIBUTES:
        tp, fp, fn = match_by_key(reference, candidate, key=lambda o: getattr(o, attribute))
        p, r, f = prf(len(tp), len(fp), len(fn))
        out[attribute] = {"tp": len(tp), "fp": len(fp), "fn": len(fn), "precision": p, "recall": r, "f1": f}
    return out
