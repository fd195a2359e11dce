"""Yes/no and exact-match scoring: the MME parsing rule on edge cases, ACC / ACC+ pairing by image (missing, extra,
shuffled answers), the answer distribution that exposes a constant-"yes" model, and the real MME files."""
from __future__ import annotations

import random

import pytest

from vlmflow.data import mme_questions
from vlmflow.scoring import ScoringError, normalize_answer, parse_yes_no, score_exact, score_groups, score_yes_no


@pytest.mark.parametrize("answer, expected", [
    ("yes", "yes"), ("No", "no"), ("Yes.", "yes"), ("yes, there is", "yes"), ("YES", "yes"),
    (" Yes", "yes"),                       # leading whitespace stripped (our one addition to MME's rule)
    ("nope", "no"),                        # by the rule: "no" inside the first 4 characters
    ("not sure", "no"),                    # same rule, same (documented) quirk
    ("no, yes", "no"), ("Yes, no", "yes"),
    ("", None), ("The answer is yes", None), ("I think so", None), ("maybe", None), (None, None),
])
def test_parse_yes_no(answer, expected):
    assert parse_yes_no(answer) == expected


def _balanced(n_images=4):
    """Two questions per image, one true yes and one true no (MME's design)."""
    return [{"question_id": f"{i}-{k}", "image_id": i, "truth": t} for i in range(n_images)
            for k, t in enumerate(("Yes", "No"))]


def test_constant_yes_is_visible():
    qs = _balanced(10)
    s = score_yes_no(qs, {q["question_id"]: "Yes" for q in qs})
    assert s.acc == 0.5 and s.acc_plus == 0.0
    assert s.share_yes == 1.0 and s.distribution == {"yes": 1.0}
    assert s.acc_by_truth == {"no": 0.0, "yes": 1.0} and s.n_by_truth == {"no": 10, "yes": 10}
    m = s.yes_metrics()
    assert m["precision"] == 0.5 and m["recall"] == 1.0 and m["yes_ratio"] == 1.0


def test_acc_plus_pairs_by_image_with_missing_and_extra_answers():
    qs = _balanced(4)
    answers = {
        "0-0": "yes", "0-1": "no",          # image 0: both right
        "1-0": "yes", "1-1": "yes",         # image 1: one wrong
        "2-0": "Yes.",                      # image 2: second answer missing -> wrong
        "3-0": "The answer is yes", "3-1": "no",  # image 3: unparseable -> wrong
        "9-9": "yes", "extra": "no",        # unknown questions: reported, not scored
    }
    s = score_yes_no(qs, answers)
    assert s.n_questions == 8 and s.n_images == 4 and s.n_missing == 1
    assert s.acc == pytest.approx(5 / 8)
    assert s.acc_plus == pytest.approx(1 / 4)
    assert set(s.extra) == {"9-9", "extra"}
    assert s.distribution == {"yes": 4 / 8, "no": 2 / 8, "missing": 1 / 8, "unparseable": 1 / 8}
    assert s.per_image() == {0: True, 1: False, 2: False, 3: False}
    # line order never matters: shuffled questions give the same score
    shuffled = qs[:]
    random.Random(3).shuffle(shuffled)
    t = score_yes_no(shuffled, answers)
    assert (t.acc, t.acc_plus, t.distribution, t.extra) == (s.acc, s.acc_plus, s.distribution, s.extra)


def test_answers_on_records_and_errors():
    qs = [{**q, "answer": "yes" if q["truth"] == "Yes" else "no"} for q in _balanced(3)]
    qs[0]["answer"] = None
    s = score_yes_no(qs)
    assert s.n_missing == 1 and s.acc == pytest.approx(5 / 6) and s.acc_plus == pytest.approx(2 / 3)
    with pytest.raises(ScoringError, match="'0-0' occurs twice"):
        score_yes_no(_balanced(1) + _balanced(1))
    with pytest.raises(ScoringError, match="'x'.*'maybe'"):
        score_yes_no([{"question_id": "x", "image_id": 0, "truth": "maybe"}])
    with pytest.raises(ScoringError, match="two answers"):
        score_yes_no(_balanced(1), [{"question_id": "0-0", "answer": "yes"}, {"question_id": "0-0", "answer": "no"}])


def test_real_mme_questions():
    qs = mme_questions(progress=False)
    truth = {q.question_id: q.label.capitalize() for q in qs}
    s = score_yes_no(qs, truth, pair_by=lambda q: q.image_key)
    assert (s.acc, s.acc_plus, s.n_images, s.n_questions) == (1.0, 1.0, 120, 240)
    flipped = {k: ("No" if v == "Yes" else "Yes") for k, v in truth.items()}
    assert score_yes_no(qs, flipped, pair_by=lambda q: q.image_key).acc == 0.0
    # pairing by bare image id would merge the same COCO image across subtasks
    assert score_yes_no(qs, truth, pairing="image", pair_by="image_id").n_images < 120
    # MME's own pairing (the reader's default): consecutive lines, as its script
    assert (score_yes_no(qs, truth).pairing, score_yes_no(qs, truth).n_images) == ("adjacent", 120)
    groups = score_groups(qs, "subtask", answers=truth)
    assert sorted(groups) == ["color", "count", "existence", "position"]
    assert all(g.n_questions == 60 and g.n_images == 30 and g.extra == () for g in groups.values())


@pytest.mark.parametrize("raw, expected", [
    ("Two", "2"), (" 3. ", "3"), ("(B)", "b"), ("c)", "c"), ("Red.", "red"), ("dark   blue", "dark blue"),
    ("", None), ("  ", None), (None, None), ("two cats", "two cats"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_score_exact_report():
    qs = [{"question_id": i, "image_id": i // 2, "truth": t} for i, t in enumerate(["2", "3", "red", "blue"])]
    s = score_exact(qs, {0: "two", 1: "2", 2: "Red", 3: ""})
    assert s.acc == 0.5 and s.acc_plus == 0.0  # image 0 has one wrong, image 1 one unparseable
    assert s.distribution == {"2": 0.5, "red": 0.25, "unparseable": 0.25}
    assert s.acc_by_truth == {"2": 1.0, "3": 0.0, "blue": 0.0, "red": 1.0}
    constant = score_exact(qs, {i: "2" for i in range(4)})
    assert constant.distribution == {"2": 1.0} and constant.acc == 0.25
    df = s.frame()
    assert list(df.columns) == ["question_id", "image_id", "truth", "answer", "parsed", "correct"]
    assert df["correct"].tolist() == [True, False, True, False]
