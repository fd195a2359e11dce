"""Scoring short answers: MME / POPE-style yes/no (ACC, ACC+) and exact match (counts, colours, choices).

Used by re-prompting (Table 1, `vlmflow.reprompt`), the toy world's question answering and the POPE / MME readers
(`vlmflow.data.pope`, `vlmflow.data.mme`). Questions come from `vlmflow.data` (`PopeRecord`, `MmeRecord`) or any
records / dicts with ``question_id``, ``image_id`` and ``truth`` (or ``label``); answers either ride on each record
(``answer``, or ``response`` as in MME's result files) or come as a mapping question_id -> answer text. Every score
also reports the answer distribution and accuracy split by the true answer, so a degenerate model (always "yes") is
visible at a glance. Confidence intervals: `vlmflow.stats.bootstrap_ci` on `Score.frame()` (clustered by image).

Yes/no parsing rules, by name (`parse_yes_no(answer, rule=...)`), each equal decision by decision to the
benchmark's own code on the recorded inputs of ``tests/data/reference`` (the rules are described here, not copied):

- ``"mme"`` (MME's ``eval_tool/calculation.py``): lower-case (no stripping); exact "yes"/"no"; else "yes", then
  "no", inside the first 4 characters; else unparseable (counted wrong). "nope" and "not sure" are "no", " yes" is
  "yes" but "  yes" (two spaces) unparseable, "The answer is yes" unparseable.
- ``"pope"`` (RUCAIBox/POPE ``evaluate.py``, quirks kept: published POPE numbers used them): keep the text before
  the first ".", drop commas, split on single spaces; "no" when a piece is exactly ``No``, ``not`` or ``no``, else
  "yes". Never unparseable: "Yeah", "", "NO", "Nope" and "maybe" are "yes"; "There is no dog" and "Certainly not."
  are "no".
- ``"lmms-eval"`` (lmms-eval's MME ``parse_pred_ans``): lower-case, strip, delete every "."; exact "yes"/"no"; a
  single "y" / "n"; else MME's first-4-characters rule.

A missing answer (None) is "missing" under every rule. The default rule follows the records: `PopeRecord` ->
"pope", `MmeRecord` -> "mme" (their class attribute ``scoring``), anything else "mme".

ACC+ pairing (`pairing=`): ``"adjacent"`` (MME's script: consecutive lines in the order given, two at a time; an
odd number of questions is an error, as there) or ``"image"`` (questions grouped by `pair_by`, the image key, in
any order). `MmeRecord` defaults to "adjacent" (the official files keep an image's two questions together), other
records to "image". A question without an answer counts as wrong; answers to unknown question ids are listed in
`Score.extra`, not scored.

Metrics that can be undefined (`Score.yes_metrics`, "yes" the positive class): under ``"mme"``, precision and recall
are computed over the parseable answers only and 0/0 is 0.0 (MME's script: scikit-learn's default). Under
``"pope"`` every answer parses and 0/0 is NaN (POPE's script stops with ZeroDivisionError). Under ``"lmms-eval"``
(which reports only ACC and ACC+ for MME) ours: unparseable answers count as "not yes" and 0/0 is NaN.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from vlmflow.errors import VlmflowError

YES, NO = "yes", "no"
MISSING, UNPARSEABLE = "missing", "unparseable"


class ScoringError(VlmflowError):
    pass


RULES = ("mme", "pope", "lmms-eval")
PAIRINGS = ("image", "adjacent")
_POPE_NO_WORDS = frozenset({"No", "not", "no"})


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ScoringError(f"unknown yes/no rule {rule!r}; choose one of {', '.join(RULES)}")


def _first_four(text: str) -> str | None:
    if text in (YES, NO):
        return text
    head = text[:4]
    if YES in head:
        return YES
    if NO in head:
        return NO
    return None


def parse_yes_no(answer: str | None, rule: str = "mme") -> str | None:
    """"yes" | "no" | None (unparseable, or missing) by the named rule; see the module docstring."""
    _check_rule(rule)
    if answer is None:
        return None
    if rule == "pope":
        first = answer.split(".")[0]
        return NO if _POPE_NO_WORDS.intersection(first.replace(",", "").split(" ")) else YES
    if rule == "lmms-eval":
        text = answer.lower().strip().replace(".", "")
        if len(text) == 1:
            return {"y": YES, "n": NO}.get(text)
        return _first_four(text)
    return _first_four(answer.lower())


def _truth(label: str | None) -> str | None:
    """A true answer ("Yes", "no", ...): the MME rule, which reads every label the benchmarks use."""
    return parse_yes_no(label, "mme")


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
    """ACC, ACC+ and how the answers are distributed. Shares are over all scored questions. `rule` and `pairing`
    name the parsing rule and the ACC+ pairing that produced it (module docstring)."""

    n_questions: int
    n_images: int  # ACC+ units: images ("image" pairing) or pairs of lines ("adjacent")
    n_missing: int
    acc: float
    acc_plus: float
    distribution: dict[str, float]  # parsed answer value -> share; plus "unparseable" and "missing"
    acc_by_truth: dict[str, float]  # true answer -> accuracy on those questions
    n_by_truth: dict[str, int]
    extra: tuple = ()  # question ids of answers to unknown questions (not scored)
    per_question: tuple[QuestionResult, ...] = field(default=(), repr=False)
    rule: str | None = None  # yes/no parsing rule; None for exact match
    pairing: str = "image"
    units: tuple = field(default=(), repr=False)  # (ACC+ unit key, all of its questions right), in order

    @property
    def share_yes(self) -> float:
        return self.distribution.get(YES, 0.0)

    @property
    def mme_score(self) -> float:
        """MME's score of one subtask: 100 * ACC + 100 * ACC+ (its script's sum)."""
        return 100 * self.acc + 100 * self.acc_plus

    def yes_metrics(self, unparseable: str | None = None, undefined: float | None = None) -> dict[str, float]:
        """POPE's and MME's report with "yes" as the positive class: tp, fp, tn, fn, precision, recall, F1, yes
        ratio (share of answers parsed "yes"). `unparseable`: "exclude" (MME: precision and recall over the parsed
        answers only) or "miss" (an unparseable or missing answer is a "not yes"); `undefined`: the value of 0/0.
        Defaults follow `rule`: "mme" -> exclude, 0.0 (MME's script); otherwise miss, NaN (POPE's script raises)."""
        official = self.rule == "mme"
        unparseable = unparseable or ("exclude" if official else "miss")
        if unparseable not in ("exclude", "miss"):
            raise ScoringError(f"unparseable must be 'exclude' or 'miss', got {unparseable!r}")
        if undefined is None:
            undefined = 0.0 if official else float("nan")
        rows = [r for r in self.per_question if unparseable == "miss" or r.parsed is not None]
        tp = sum(r.parsed == YES and r.truth == YES for r in rows)
        fp = sum(r.parsed == YES and r.truth != YES for r in rows)
        fn = sum(r.parsed != YES and r.truth == YES for r in rows)
        tn = len(rows) - tp - fp - fn
        p = tp / (tp + fp) if tp + fp else undefined
        r = tp / (tp + fn) if tp + fn else undefined
        f1 = 2 * p * r / (p + r) if tp + fp and tp + fn and p + r > 0 else float("nan")
        return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "precision": p, "recall": r, "f1": f1,
                "yes_ratio": self.share_yes}

    def per_image(self) -> dict[Any, bool]:
        """ACC+ unit -> all of its questions right (what ACC+ averages). Units: image keys ("image" pairing) or
        the index of each pair of lines ("adjacent")."""
        return dict(self.units)

    def frame(self):
        """One row per question (pandas DataFrame): question_id, image_id, truth, answer, parsed, correct; feed it
        to `vlmflow.stats.bootstrap_ci(frame, value="correct")` for an image-clustered CI of ACC."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.per_question],
                            columns=["question_id", "image_id", "truth", "answer", "parsed", "correct"])

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_question")
        d.pop("units")
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


def _units(results: list[QuestionResult], pairing: str) -> list[tuple[Any, bool]]:
    if pairing == "image":
        images: dict[Any, bool] = {}
        for r in results:
            images[r.image_id] = images.get(r.image_id, True) and r.correct
        return list(images.items())
    if pairing == "adjacent":
        if len(results) % 2:
            raise ScoringError(f"pairing 'adjacent' needs an even number of questions (two lines per image, as "
                               f"MME's script asserts), got {len(results)}; last: {results[-1].question_id!r}")
        return [(i // 2, results[i].correct and results[i + 1].correct) for i in range(0, len(results), 2)]
    raise ScoringError(f"unknown pairing {pairing!r}; choose one of {', '.join(PAIRINGS)}")


def _score(questions: Iterable[Any], answers: Mapping[Any, str | None] | Iterable[Any] | None,
           parse: Callable[[str | None], str | None], pair_by: str | Callable[[Any], Any],
           truth_parse: Callable[[str | None], str | None], pairing: str = "image",
           rule: str | None = None) -> Score:
    key_of = _pairing(pair_by)
    questions = list(questions)
    by_id: dict[Any, Any] = {}
    for q in questions:
        qid = _get(q, "question_id")
        if qid in by_id:
            raise ScoringError(f"question id {qid!r} occurs twice in the questions")
        by_id[qid] = q

    if answers is None:
        given = {qid: _get(q, "answer", "response", default=None) for qid, q in by_id.items()}
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
    for r in results:
        by_truth[r.truth].append(r.correct)
    units = _units(results, pairing)
    return Score(
        n_questions=n, n_images=len(units), n_missing=counts.get(MISSING, 0),
        acc=sum(r.correct for r in results) / n, acc_plus=sum(ok for _, ok in units) / len(units),
        distribution={k: c / n for k, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))},
        acc_by_truth={t: sum(v) / len(v) for t, v in sorted(by_truth.items())},
        n_by_truth={t: len(v) for t, v in sorted(by_truth.items())},
        extra=extra, per_question=tuple(results), rule=rule, pairing=pairing, units=tuple(units),
    )


def official_scoring(questions: Iterable[Any]) -> dict[str, Any]:
    """The benchmark's own rule, pairing and image key for these records (their class attribute ``scoring``), or
    {} for records of no benchmark. Records of two benchmarks in one list are an error."""
    found = {id(rules): rules for rules in (getattr(type(q), "scoring", None) for q in questions) if rules}
    if len(found) > 1:
        raise ScoringError("these questions come from several benchmarks; score each on its own")
    return dict(next(iter(found.values()), {}))


def score_yes_no(questions: Iterable[Any], answers: Mapping[Any, str | None] | Iterable[Any] | None = None,
                 pair_by: str | Callable[[Any], Any] | None = None, rule: str | None = None,
                 pairing: str | None = None) -> Score:
    """ACC / ACC+ of yes/no answers (MME, POPE, any). `rule`: "mme", "pope" or "lmms-eval" (module docstring);
    `pairing`: "adjacent" or "image"; `pair_by`: the field (or function of a question) naming its image for
    "image" pairing, e.g. ``lambda r: r.image_key`` to score several MME subtasks at once. Each left at None takes
    the benchmark's official choice for `PopeRecord` / `MmeRecord` questions, else "mme", "image", "image_id"."""
    questions = list(questions)
    official = official_scoring(questions)
    rule = rule or official.get("rule", "mme")
    _check_rule(rule)
    pairing = pairing or official.get("pairing", "image")
    pair_by = pair_by or official.get("pair_by", "image_id")
    return _score(questions, answers, lambda a: parse_yes_no(a, rule), pair_by, _truth, pairing, rule)


def score_exact(questions: Iterable[Any], answers: Mapping[Any, str | None] | Iterable[Any] | None = None,
                pair_by: str | Callable[[Any], Any] = "image_id",
                normalize: Callable[[str | None], str | None] = normalize_answer, pairing: str = "image") -> Score:
    """Exact match after `normalize` (counts, colours, multiple-choice letters), with the same report."""
    return _score(questions, answers, normalize, pair_by, normalize, pairing)


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
