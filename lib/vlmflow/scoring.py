"""Scoring short answers: MME / POPE-style yes/no (ACC, ACC+) and exact match (counts, colours, choices).

Used by re-prompting (Table 1, `reprompt.py`), the toy world's question answering and the POPE / MME notebooks.
Questions come from `vlmflow.data` (`PopeRecord`, `MmeRecord`) or any records / dicts with ``question_id``,
``image_id`` and ``truth`` (or ``label``); answers either ride on each record (``answer``) or come as a mapping
question_id -> answer text. Every score also reports the answer distribution and accuracy split by the true answer,
so a degenerate model (always "yes") is visible at a glance. Confidence intervals: `vlmflow.stats.bootstrap_ci` on
`Score.frame()` (clustered by image).

Rules (MME's official eval tool, kept): lower-case; exact "yes"/"no"; else "yes" or "no" inside the first 4
characters ("yes" checked first); else unparseable, which counts as wrong. One deliberate addition: surrounding
whitespace is stripped first (decoded generations often start with a space). ACC+ = share of images all of whose
questions (2 in MME) are answered right; questions are grouped by image id, never by line order. A question
without an answer counts as wrong; answers to unknown question ids are listed in `Score.extra`, not scored.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

from vlmflow.errors import VlmflowError

YES, NO = "yes", "no"
MISSING, UNPARSEABLE = "missing", "unparseable"


class ScoringError(VlmflowError):
    pass


def parse_yes_no(answer: str | None) -> str | None:
    """"yes" | "no" | None (unparseable) by the MME rule; see the module docstring."""
    if answer is None:
        return None
    text = answer.strip().lower()
    if text in (YES, NO):
        return text
    head = text[:4]
    if YES in head:
        return YES
    if NO in head:
        return NO
    return None


_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_CHOICE = re.compile(r"^\(?([a-z])[).:]?$")  # "(a)", "a)", "a.", "a:" -> "a"
_EDGE_PUNCT = " \t\n\"'`.,;:!?"


def normalize_answer(answer: str | None) -> str | None:
    """Canonical short answer for exact match: lower-case, trimmed, edge punctuation removed, inner spaces
    collapsed, number words 0-20 -> digits, a lone option letter ("(B)", "b.") -> the letter. None/empty -> None."""
    if answer is None:
        return None
    text = " ".join(answer.lower().split()).strip(_EDGE_PUNCT)
    if not text:
        return None
    if text in _NUMBERS:
        return _NUMBERS[text]
    m = _CHOICE.match(text)
    return m.group(1) if m else text


@dataclass(frozen=True)
class QuestionResult:
    question_id: Any
    image_id: Any  # the pairing key (image id, or e.g. (subtask, image id) for MME)
    truth: str
    answer: str | None  # raw answer text, None when missing
    parsed: str | None  # parsed / normalized answer, None when missing or unparseable
    correct: bool


@dataclass(frozen=True)
class Score:
    """ACC, ACC+ and how the answers are distributed. Shares are over all scored questions."""

    n_questions: int
    n_images: int
    n_missing: int
    acc: float
    acc_plus: float
    distribution: dict[str, float]  # parsed answer value -> share; plus "unparseable" and "missing"
    acc_by_truth: dict[str, float]  # true answer -> accuracy on those questions
    n_by_truth: dict[str, int]
    extra: tuple = ()  # question ids of answers to unknown questions (not scored)
    per_question: tuple[QuestionResult, ...] = field(default=(), repr=False)

    @property
    def share_yes(self) -> float:
        return self.distribution.get(YES, 0.0)

    def yes_metrics(self) -> dict[str, float]:
        """POPE's report with "yes" as the positive class: precision, recall, F1, yes ratio (NaN if undefined)."""
        tp = sum(r.parsed == YES and r.truth == YES for r in self.per_question)
        pred_yes = sum(r.parsed == YES for r in self.per_question)
        true_yes = sum(r.truth == YES for r in self.per_question)
        p = tp / pred_yes if pred_yes else float("nan")
        r = tp / true_yes if true_yes else float("nan")
        f1 = 2 * p * r / (p + r) if pred_yes and true_yes and (p + r) > 0 else float("nan")
        return {"precision": p, "recall": r, "f1": f1, "yes_ratio": self.share_yes}

    def per_image(self) -> dict[Any, bool]:
        """image key -> all of its questions right (what ACC+ averages)."""
        out: dict[Any, bool] = {}
        for r in self.per_question:
            out[r.image_id] = out.get(r.image_id, True) and r.correct
        return out

    def frame(self):
        """One row per question (pandas DataFrame): question_id, image_id, truth, answer, parsed, correct; feed it
        to `vlmflow.stats.bootstrap_ci(frame, value="correct")` for an image-clustered CI of ACC."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.per_question],
                            columns=["question_id", "image_id", "truth", "answer", "parsed", "correct"])

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_question")
        d["extra"] = list(self.extra)
        return d


def _get(record: Any, *names: str, default: Any = KeyError) -> Any:
    for name in names:
        if isinstance(record, Mapping):
            if name in record:
                return record[name]
        elif hasattr(record, name):
            return getattr(record, name)
    if default is KeyError:
        raise ScoringError(f"record {record!r} has no field {' / '.join(names)}")
    return default


def _pairing(pair_by: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    if callable(pair_by):
        return pair_by
    return lambda rec: _get(rec, pair_by)


def _score(questions: Iterable[Any], answers: Mapping[Any, str | None] | Iterable[Any] | None,
           parse: Callable[[str | None], str | None], pair_by: str | Callable[[Any], Any],
           truth_parse: Callable[[str | None], str | None]) -> Score:
    key_of = _pairing(pair_by)
    questions = list(questions)
    by_id: dict[Any, Any] = {}
    for q in questions:
        qid = _get(q, "question_id")
        if qid in by_id:
            raise ScoringError(f"question id {qid!r} occurs twice in the questions")
        by_id[qid] = q

    if answers is None:
        given = {qid: _get(q, "answer", default=None) for qid, q in by_id.items()}
    elif isinstance(answers, Mapping):
        given = dict(answers)
    else:
        given = {}
        for a in answers:
            qid = _get(a, "question_id")
            if qid in given:
                raise ScoringError(f"question id {qid!r} has two answers")
            given[qid] = _get(a, "answer")
    extra = tuple(qid for qid in given if qid not in by_id)

    results = []
    for qid, q in by_id.items():
        raw_truth = _get(q, "truth", "label")
        truth = truth_parse(None if raw_truth is None else str(raw_truth))
        if truth is None:
            raise ScoringError(f"question {qid!r}: cannot read its true answer {raw_truth!r}")
        answer = given.get(qid)
        parsed = parse(answer) if answer is not None else None
        results.append(QuestionResult(qid, key_of(q), truth, answer, parsed, parsed is not None and parsed == truth))

    n = len(results)
    if n == 0:
        raise ScoringError("no questions to score")
    counts = Counter(r.parsed if r.parsed is not None else (MISSING if r.answer is None else UNPARSEABLE)
                     for r in results)
    by_truth: dict[str, list[bool]] = defaultdict(list)
    images: dict[Any, bool] = {}
    for r in results:
        by_truth[r.truth].append(r.correct)
        images[r.image_id] = images.get(r.image_id, True) and r.correct
    return Score(
        n_questions=n, n_images=len(images), n_missing=counts.get(MISSING, 0),
        acc=sum(r.correct for r in results) / n, acc_plus=sum(images.values()) / len(images),
        distribution={k: c / n for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))},
        acc_by_truth={t: sum(v) / len(v) for t, v in sorted(by_truth.items())},
        n_by_truth={t: len(v) for t, v in sorted(by_truth.items())},
        extra=extra, per_question=tuple(results),
    )


def score_yes_no(questions: Iterable[Any], answers: Mapping[Any, str | None] | Iterable[Any] | None = None,
                 pair_by: str | Callable[[Any], Any] = "image_id") -> Score:
    """ACC / ACC+ of yes/no answers (MME, POPE). `pair_by`: the field (or function of a question) naming its image,
    e.g. ``lambda r: r.image_key`` to score several MME subtasks at once."""
    return _score(questions, answers, parse_yes_no, pair_by, parse_yes_no)


def score_exact(questions: Iterable[Any], answers: Mapping[Any, str | None] | Iterable[Any] | None = None,
                pair_by: str | Callable[[Any], Any] = "image_id",
                normalize: Callable[[str | None], str | None] = normalize_answer) -> Score:
    """Exact match after `normalize` (counts, colours, multiple-choice letters), with the same report."""
    return _score(questions, answers, normalize, pair_by, normalize)


def score_groups(questions: Iterable[Any], group_by: str | Callable[[Any], Any],
                 scorer: Callable[..., Score] = score_yes_no, **kwargs) -> dict[Any, Score]:
    """One score per group of questions (e.g. per MME subtask: ``group_by="subtask"``). Answers given as a mapping
    are shared by all groups; answers to questions outside a group are not counted as extra."""
    key = _pairing(group_by)
    groups: dict[Any, list] = defaultdict(list)
    for q in questions:
        groups[key(q)].append(q)
    out = {}
    answers = kwargs.pop("answers", None)
    for g, qs in groups.items():
        sub = answers
        if isinstance(answers, Mapping):
            ids = {_get(q, "question_id") for q in qs}
            sub = {k: v for k, v in answers.items() if k in ids}
        out[g] = scorer(qs, sub, **kwargs)
    return out
