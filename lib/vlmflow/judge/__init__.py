"""Judges: how much of a reference description's objects a candidate description keeps (the paper's
LLM-as-a-judge and the exact and lexical judges that stand in for it offline).

    from vlmflow.judge import get_judge, aggregate
    judge = get_judge("exact")             # toy world: exact (size, colour, shape) triples
    judge = get_judge("lexical")           # COCO English: 80 categories via the CHAIR synonym lists, no network
    judge = get_judge("llm", model="gpt-4o-2024-08-06", base_url=None)   # the paper's LLM-as-a-judge
    j = judge.judge(reference, candidate)  # -> Judgment: objects, tp pairs, fp, fn, precision, recall, f1, failed
    js = judge.judge_many(pairs)           # batch form, progress bar (LLM: cache, threads or the Batch API)
    agg = aggregate(js)                    # mean of per-image P/R/F1 and F1 of pooled counts; failures counted apart

Sweeps (`vlmflow.sweep`) and notebooks score knocked-out generations against the unmasked ones with these;
`vlmflow.judge.validate` measures how far a judge agrees with the exact truth or with human labels, and
`vlmflow.judge.label` writes the static page humans label pairs with. `vlmflow judge` is the command line.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vlmflow.judge.base import Judge, JudgeError, Judgment, prf

JUDGES = ("exact", "lexical", "llm")

__all__ = ["JUDGES", "Aggregate", "Judge", "JudgeError", "Judgment", "aggregate", "get_judge", "options_for", "prf"]


def get_judge(name: str, **options: Any) -> Judge:
    """A judge by name; `options` go to its constructor (e.g. model=, base_url=, cache_dir= for "llm")."""
    if name == "exact":
        from vlmflow.judge.exact import ExactJudge

        return ExactJudge(**options)
    if name == "lexical":
        from vlmflow.judge.lexical import LexicalJudge

        return LexicalJudge(**options)
    if name == "llm":
        from vlmflow.judge.llm import LLMJudge

        return LLMJudge(**options)
    raise JudgeError(f"unknown judge {name!r}; choose one of {', '.join(JUDGES)}")


def options_for(name: str, *, model: str, base_url: str | None, cache_dir) -> dict[str, Any]:
    """The :func:`get_judge` options that a notebook's judge parameters give: the LLM judge's model, endpoint and
    judgment cache folder; none for the offline judges (their answers depend on nothing else)."""
    return {"model": model, "base_url": base_url, "cache_dir": cache_dir} if name == "llm" else {}


@dataclass(frozen=True)
class Aggregate:
    """Scores over many judgments. Failed judgments are excluded from every score and counted in `n_failed`.

    mean_*: the mean over images of each image's precision / recall / F1 (the paper's "averaged over images").
    pooled_*: precision / recall / F1 of the TP / FP / FN counts summed over images (large descriptions weigh more).
    Scores are None when no judgment succeeded. `aggregation` says this in words, for captions and tables.
    """

    n: int
    n_failed: int
    mean_precision: float | None
    mean_recall: float | None
    mean_f1: float | None
    pooled_tp: int
    pooled_fp: int
    pooled_fn: int
    pooled_precision: float | None
    pooled_recall: float | None
    pooled_f1: float | None
    failures: dict[str, int] = field(default_factory=dict)
    aggregation: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def aggregate(judgments: Iterable[Judgment]) -> Aggregate:
    judgments = list(judgments)
    ok = [j for j in judgments if j.ok]
    failures: dict[str, int] = {}
    for j in judgments:
        if not j.ok:
            failures[j.failed] = failures.get(j.failed, 0) + 1
    tp, fp, fn = (sum(j.counts[i] for j in ok) for i in range(3))
    if ok:
        means = [sum(getattr(j, name) for j in ok) / len(ok) for name in ("precision", "recall", "f1")]
        pooled = list(prf(tp, fp, fn))
    else:
        means, pooled = [None] * 3, [None] * 3
    text = (f"mean over {len(ok)} images of per-image precision/recall/F1, and F1 of counts pooled over them "
            f"(TP={tp}, FP={fp}, FN={fn}); {len(judgments) - len(ok)} failed judgments excluded")
    return Aggregate(len(judgments), len(judgments) - len(ok), *means, tp, fp, fn, *pooled, failures, text)
