"""The judge contract: `Judgment` (one reference/candidate comparison) and the `Judge` base class.

Every judge (`exact` for the toy world, `lexical` for COCO English, `llm` for any OpenAI-compatible endpoint) turns
a reference description (the unmasked run) and a candidate description (a knocked-out run) of the same image into
two object lists and a one-to-one matching between them. Precision, recall and F1 are always computed here, from
the counts, never taken from a judge's own arithmetic (the official judge's in-context examples got it wrong).

Zero-division conventions (stated once, used everywhere):
  * precision = TP / (TP + FP); a candidate with no objects claims nothing false: precision = 1.
  * recall    = TP / (TP + FN); a reference with no objects has nothing to lose: recall = 1.
  * F1        = 2 TP / (2 TP + FP + FN) (= 2PR / (P + R) whenever that is defined); both lists empty: F1 = 1.
    So an empty candidate against a non-empty reference scores F1 = 0, and vice versa.
A judgment that could not be made (e.g. the LLM kept answering garbage) has `failed` set to the reason and its
scores are None; `aggregate` counts those separately instead of averaging a NaN.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmflow.errors import VlmflowError


class JudgeError(VlmflowError):
    """A judge cannot run at all (unknown judge name, bad endpoint, missing key, bad input file)."""


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """(precision, recall, F1) from counts, with the module's zero-division conventions."""
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    denominator = 2 * tp + fp + fn
    f1 = 2 * tp / denominator if denominator else 1.0
    return precision, recall, f1


@dataclass(frozen=True)
class Judgment:
    """One comparison of a candidate description against a reference description.

    reference_objects / candidate_objects: the object names each description mentions (a multiset: a name appears
    once per object). tp: matched (reference name, candidate name) pairs, one-to-one; fp: candidate objects with no
    partner (hallucinated); fn: reference objects with no partner (lost). precision/recall/f1 are derived from the
    counts (see the module docstring); they are None exactly when `failed` holds a reason.
    usage: token counts for LLM judges ({"prompt_tokens", "completion_tokens", "cached": bool}); details: judge
    specific extras (the LLM's reasoning, per-attribute scores of the exact judge, mention words of the lexical one).
    """

    reference_objects: tuple[str, ...] = ()
    candidate_objects: tuple[str, ...] = ()
    tp: tuple[tuple[str, str], ...] = ()
    fp: tuple[str, ...] = ()
    fn: tuple[str, ...] = ()
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    failed: str | None = None
    usage: Mapping[str, Any] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_matching(
        cls,
        reference_objects: Iterable[str],
        candidate_objects: Iterable[str],
        tp: Iterable[tuple[str, str]],
        fp: Iterable[str],
        fn: Iterable[str],
        **extra: Any,
    ) -> "Judgment":
        tp, fp, fn = tuple((str(r), str(c)) for r, c in tp), tuple(map(str, fp)), tuple(map(str, fn))
        precision, recall, f1 = prf(len(tp), len(fp), len(fn))
        return cls(tuple(map(str, reference_objects)), tuple(map(str, candidate_objects)), tp, fp, fn,
                   precision, recall, f1, None, **extra)

    @classmethod
    def failure(cls, reason: str, **extra: Any) -> "Judgment":
        return cls(failed=str(reason), **extra)

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def counts(self) -> tuple[int, int, int]:
        """(TP, FP, FN)."""
        return len(self.tp), len(self.fp), len(self.fn)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists instead of tuples); `from_dict` inverts it."""
        out = dataclasses.asdict(self)
        out["tp"] = [list(p) for p in self.tp]
        for name in ("reference_objects", "candidate_objects", "fp", "fn"):
            out[name] = list(out[name])
        out["usage"], out["details"] = dict(self.usage), dict(self.details)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Judgment":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for name in ("reference_objects", "candidate_objects", "fp", "fn"):
            kw[name] = tuple(kw.get(name) or ())
        kw["tp"] = tuple(tuple(p) for p in kw.get("tp") or ())
        return cls(**kw)


class Judge:
    """Base class. Subclasses implement `judge`; `judge_many` runs it over pairs with a progress bar.

    `name` is the registry name (`get_judge(name)`); `version` changes whenever a judge's decisions may change, and
    goes into results' provenance.
    """

    name: str = "base"
    version: str = "0"

    def judge(self, reference: str, candidate: str) -> Judgment:
        raise NotImplementedError

    def judge_many(self, pairs: Sequence[tuple[str, str]], progress: bool = True) -> list[Judgment]:
        """Judge each (reference, candidate) pair; results in input order."""
        from tqdm.auto import tqdm

        from vlmflow.progress import bar_disabled

        pairs = _check_pairs(pairs)
        return [self.judge(r, c) for r, c in tqdm(pairs, desc=f"judge[{self.name}]", disable=bar_disabled(progress))]

    def provenance(self) -> dict[str, Any]:
        return {"judge": self.name, "judge_version": self.version}


def _check_pairs(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise JudgeError(f"pair {i} must be (reference: str, candidate: str), got {type(pair).__name__}: {pair!r:.80}")
        out.append((pair[0], pair[1]))
    return out
