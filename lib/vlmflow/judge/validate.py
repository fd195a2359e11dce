"""How far a judge can be trusted: its agreement with a reference judgment of the same pairs.

The reference is the exact truth (the exact judge on toy scenes) or human labels. Human labels live in a JSONL file,
one pair per line (written by the labelling page of `vlmflow.judge.label`, or by hand):

    {"pair_id": "139/ko-img-gen", "reference": "...", "candidate": "...",
     "reference_objects": ["man", "dog"], "candidate_objects": ["person"],
     "tp": [["man", "person"]], "labeller": "ab", "note": ""}

FP and FN are implied (unmatched objects); `read_labels` checks every line and names the file and line at fault.

`agreement(judged, truth, tolerance)` reports, over pairs where neither side failed:
  * per-object decision agreement: every object gets a binary decision, reference objects "kept" (TP) or "lost"
    (FN), candidate objects "matched" (TP) or "hallucinated" (FP). Objects are aligned across the two judgments
    by name (`align`, default: case/space-normalised name; one-to-one, multiset aware); objects only one side
    lists are counted as `unaligned` (an extraction disagreement), not as decisions;
  * Cohen's kappa of those aligned decisions (chance-corrected agreement);
  * per-pair agreement on precision and on recall: the share of pairs with |P_judge - P_truth| <= tolerance
    (same for R), plus mean absolute differences of P, R and F1.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmflow.judge.base import JudgeError, Judgment
from vlmflow.judge.matching import MatchError, apply_pairs, match_by_key, normalise_name


def cohens_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' labels for the same items: (p_o - p_e) / (1 - p_e).

    None when undefined: no items, or chance agreement p_e = 1 (both raters gave one and the same label to all).
    """
    if len(a) != len(b):
        raise JudgeError(f"kappa needs two label lists of equal length, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return None
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in set(count_a) | set(count_b)) / n ** 2
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def decisions(judgment: Judgment) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """(reference objects with kept?, candidate objects with matched?), in list order."""
    kept = Counter(r for r, _ in judgment.tp)
    matched = Counter(c for _, c in judgment.tp)
    ref = []
    for name in judgment.reference_objects:
        ref.append((name, kept[name] > 0))
        kept[name] -= kept[name] > 0
    cand = []
    for name in judgment.candidate_objects:
        cand.append((name, matched[name] > 0))
        matched[name] -= matched[name] > 0
    return ref, cand


def aligned_decisions(judged: Judgment, truth: Judgment, align: Callable[[str], Hashable] = normalise_name,
                      ) -> tuple[list[bool], list[bool], int]:
    """One pair's object decisions aligned by name: (the judge's, the truth's, how many objects only one side
    lists). The unit that :func:`agreement` pools, and that a bootstrap over pairs or images resamples."""
    labels_j, labels_t, unaligned = [], [], 0
    for side in (0, 1):
        mine, theirs = decisions(judged)[side], decisions(truth)[side]
        matched, extra, missing = match_by_key(theirs, mine, key=lambda d: align(d[0]))
        unaligned += len(extra) + len(missing)
        for truth_decision, judged_decision in matched:
            labels_t.append(truth_decision[1])
            labels_j.append(judged_decision[1])
    return labels_j, labels_t, unaligned


@dataclass(frozen=True)
class Agreement:
    n_pairs: int
    n_failed: int
    n_decisions: int
    n_unaligned: int
    object_agreement: float | None
    kappa: float | None
    tolerance: float
    precision_agreement: float | None
    recall_agreement: float | None
    mean_abs_diff_precision: float | None
    mean_abs_diff_recall: float | None
    mean_abs_diff_f1: float | None
    confusion: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(judged: Sequence[Judgment], truth: Sequence[Judgment], tolerance: float = 0.1,
              align: Callable[[str], Hashable] = normalise_name) -> Agreement:
    """Agreement of `judged` with `truth`, pair by pair (same order). See the module docstring."""
    if len(judged) != len(truth):
        raise JudgeError(f"agreement needs one truth per judgment: {len(judged)} judged vs {len(truth)} truth")
    pairs = [(j, t) for j, t in zip(judged, truth) if j.ok and t.ok]
    labels_j, labels_t, unaligned = [], [], 0
    for j, t in pairs:
        mine, theirs, n_unaligned = aligned_decisions(j, t, align)
        labels_j += mine
        labels_t += theirs
        unaligned += n_unaligned
    n = len(labels_j)
    confusion = Counter(f"judge={'T' if a else 'F'},truth={'T' if b else 'F'}" for a, b in zip(labels_j, labels_t))

    def share(values: list[bool]) -> float | None:
        return sum(values) / len(values) if values else None

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return Agreement(
        n_pairs=len(judged), n_failed=len(judged) - len(pairs), n_decisions=n, n_unaligned=unaligned,
        object_agreement=share([a == b for a, b in zip(labels_j, labels_t)]),
        kappa=cohens_kappa(labels_j, labels_t), tolerance=tolerance,
        precision_agreement=share([abs(j.precision - t.precision) <= tolerance + 1e-12 for j, t in pairs]),
        recall_agreement=share([abs(j.recall - t.recall) <= tolerance + 1e-12 for j, t in pairs]),
        mean_abs_diff_precision=mean([abs(j.precision - t.precision) for j, t in pairs]),
        mean_abs_diff_recall=mean([abs(j.recall - t.recall) for j, t in pairs]),
        mean_abs_diff_f1=mean([abs(j.f1 - t.f1) for j, t in pairs]),
        confusion=dict(confusion),
    )


# ---- human labels (JSONL) ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HumanLabel:
    pair_id: str
    reference: str
    candidate: str
    reference_objects: tuple[str, ...]
    candidate_objects: tuple[str, ...]
    tp: tuple[tuple[str, str], ...]
    labeller: str = ""
    note: str = ""

    def judgment(self) -> Judgment:
        tp, fp, fn = apply_pairs(self.reference_objects, self.candidate_objects, self.tp)
        return Judgment.from_matching(self.reference_objects, self.candidate_objects, tp, fp, fn,
                                      details={"labeller": self.labeller, "pair_id": self.pair_id})

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["reference_objects"], out["candidate_objects"] = list(self.reference_objects), list(self.candidate_objects)
        out["tp"] = [list(p) for p in self.tp]
        return out

    @classmethod
    def from_judgment(cls, pair_id: str, reference: str, candidate: str, judgment: Judgment,
                      labeller: str = "", note: str = "") -> "HumanLabel":
        """A label pre-filled from a judge's answer (the starting point a human corrects)."""
        return cls(pair_id, reference, candidate, judgment.reference_objects, judgment.candidate_objects,
                   judgment.tp, labeller, note)


_REQUIRED = ("pair_id", "reference", "candidate", "reference_objects", "candidate_objects", "tp")


def read_labels(path: str | Path) -> list[HumanLabel]:
    from vlmflow.errors import read_user_text

    path = Path(path)
    lines = read_user_text(path, "human labels file", JudgeError).splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            missing = [k for k in _REQUIRED if k not in data]
            if missing:
                raise ValueError(f"missing fields {missing}")
            label = HumanLabel(str(data["pair_id"]), data["reference"], data["candidate"],
                               tuple(map(str, data["reference_objects"])), tuple(map(str, data["candidate_objects"])),
                               tuple((str(r), str(c)) for r, c in data["tp"]), str(data.get("labeller", "")),
                               str(data.get("note", "")))
            label.judgment()  # its matches must fit its lists
        except (ValueError, TypeError, MatchError) as exc:
            raise JudgeError(f"{path} line {n}: bad human label ({exc})") from None
        out.append(label)
    if not out:
        raise JudgeError(f"human labels file {path} holds no labels (one JSON object per line)")
    return out


def write_labels(path: str | Path, labels: Sequence[HumanLabel]) -> None:
    from vlmflow.atomic import atomic_write

    atomic_write(path, "".join(json.dumps(label.to_json(), ensure_ascii=False) + "\n" for label in labels))
