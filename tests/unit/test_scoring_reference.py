"""Yes/no scoring against the benchmarks' own code: the decisions and numbers that RUCAIBox/POPE's evaluate.py, MME's
eval_tool/calculation.py and lmms-eval's MME parser produced on answers written for this test
(tests/data/reference/yes_no.json, written by tests/data/reference/regenerate.py, which names the commits). Under each
benchmark's official rule, every decision and every aggregate must be equal."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vlmflow.data import read_mme, read_pope
from vlmflow.scoring import ScoringError, parse_yes_no, score_groups, score_yes_no

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "reference" / "yes_no.json").read_text())
OTHER = {"other": None}  # MME's and lmms-eval's word for an unparseable answer


def _mme_pairs():
    for task in REFERENCE["mme"]["tasks"].values():
        for line, decision in zip(task["lines"], task["decisions"]):
            yield line[3], decision


def _decision_pairs(rule):
    if rule == "pope":
        return [(a, d) for s in REFERENCE["pope"]["scenarios"].values() for a, d in zip(s["answers"], s["decisions"])]
    if rule == "mme":
        return list(_mme_pairs())
    ref = REFERENCE["lmms-eval"]
    return list(zip(ref["answers"], ref["decisions"]))


@pytest.mark.parametrize("rule", ["pope", "mme", "lmms-eval"])
def test_every_decision_equals_the_reference(rule):
    pairs = _decision_pairs(rule)
    assert len(pairs) > 100
    wrong = [(a, d, parse_yes_no(a, rule)) for a, d in pairs if parse_yes_no(a, rule) != OTHER.get(d, d)]
    assert wrong == [], f"{len(wrong)}/{len(pairs)} decisions differ from the {rule} reference"


def test_the_rules_really_differ_on_these_answers():
    """The reference inputs tell the rules apart (else the test above could not catch a rule swapped for another)."""
    answers = REFERENCE["lmms-eval"]["answers"]
    for a, b in (("pope", "mme"), ("mme", "lmms-eval"), ("pope", "lmms-eval")):
        assert sum(parse_yes_no(x, a) != parse_yes_no(x, b) for x in answers) >= 3, (a, b)
    assert parse_yes_no("There is no dog.", "pope") == "no" and parse_yes_no("There is no dog.", "mme") is None
    assert parse_yes_no("  yes", "mme") is None and parse_yes_no("  yes", "lmms-eval") == "yes"
    assert parse_yes_no(None, "pope") is None
    with pytest.raises(ScoringError, match="'strict'.*mme, pope, lmms-eval"):
        parse_yes_no("yes", "strict")


def _pope_records(tmp_path, scenario):
    path = tmp_path / "coco_pope_random.json"
    path.write_text("".join(json.dumps({"question_id": i, "image": f"COCO_val2014_{i // 2:012d}.jpg",
                                        "text": "Is there a dog in the image?", "label": label}) + "\n"
                            for i, label in enumerate(scenario["labels"])))
    return read_pope(path)


@pytest.mark.parametrize("name", sorted(REFERENCE["pope"]["scenarios"]))
def test_pope_numbers_equal_evaluate_py(tmp_path, name):
    scenario = REFERENCE["pope"]["scenarios"][name]
    records = _pope_records(tmp_path, scenario)
    score = score_yes_no(records, dict(enumerate(scenario["answers"])))  # the reader's default: POPE's rule
    assert score.rule == "pope"
    assert [r.parsed for r in score.per_question] == scenario["decisions"]
    got = score.yes_metrics()
    ref = scenario["metrics"]
    assert {k: got[k.lower()] for k in ("TP", "FP", "TN", "FN")} == {k: ref[k] for k in ("TP", "FP", "TN", "FN")}
    assert got["yes_ratio"] == pytest.approx(ref["yes_ratio"], abs=1e-15)
    if "acc" in ref:
        assert score.acc == pytest.approx(ref["acc"], abs=1e-15)
    zero = {"precision": ref["TP"] + ref["FP"] == 0, "recall": ref["TP"] + ref["FN"] == 0}
    zero["f1"] = zero["precision"] or zero["recall"] or ref["TP"] == 0
    for key in ("precision", "recall", "f1"):
        if key in ref:
            assert got[key] == pytest.approx(ref[key], abs=1e-15)
        elif zero[key]:  # the official script stops with ZeroDivisionError here: NaN
            assert scenario["error"].startswith("ZeroDivisionError") and math.isnan(got[key])
    assert (scenario["error"] is None) == all(k in ref for k in ("precision", "recall", "f1"))


def _mme_records(tmp_path, task, data):
    path = tmp_path / f"{task}.txt"
    path.write_text("".join("\t".join(line) + "\n" for line in data["lines"]))
    return read_mme(path)


@pytest.mark.parametrize("task", sorted(REFERENCE["mme"]["tasks"]))
def test_mme_numbers_equal_calculation_py(tmp_path, task):
    data = REFERENCE["mme"]["tasks"][task]
    records = _mme_records(tmp_path, task, data)
    score = score_yes_no(records)  # answers from the result file's 4th column; MME's rule and adjacent pairing
    assert (score.rule, score.pairing) == ("mme", "adjacent")
    assert [r.parsed for r in score.per_question] == [OTHER.get(d, d) for d in data["decisions"]]
    ref = data["metrics"]
    assert score.acc == pytest.approx(ref["acc"], abs=1e-15)
    assert score.acc_plus == pytest.approx(ref["acc_plus"], abs=1e-15)
    assert score.mme_score == pytest.approx(data["score"], abs=1e-12)
    assert round(score.distribution.get("unparseable", 0.0) * score.n_questions) == ref["other_num"]
    m = score.yes_metrics()
    assert {k: m[k.lower()] for k in ("TP", "FN", "TN", "FP")} == {k: ref[k] for k in ("TP", "FN", "TN", "FP")}
    assert m["precision"] == pytest.approx(ref["precision"], abs=1e-15)
    assert m["recall"] == pytest.approx(ref["recall"], abs=1e-15)


def test_mme_pairing_by_image_differs_only_where_lines_are_not_adjacent(tmp_path):
    """The count file pairs an image's two questions across other lines; the others keep them adjacent."""
    for task, data in REFERENCE["mme"]["tasks"].items():
        records = _mme_records(tmp_path, task, data)
        by_image = score_yes_no(records, pairing="image")
        adjacent_pairs = all(a.image == b.image for a, b in zip(records[::2], records[1::2]))
        if adjacent_pairs:
            assert by_image.acc_plus == pytest.approx(data["metrics"]["acc_plus"], abs=1e-15), task
        else:
            assert by_image.acc_plus != pytest.approx(data["metrics"]["acc_plus"]), task
    with pytest.raises(ScoringError, match="even number.*3"):
        score_yes_no(records[:3], pairing="adjacent")


def test_mme_subtasks_scored_together_per_group(tmp_path):
    """score_groups over a concatenation of subtask files gives each subtask's official numbers."""
    records = [r for task, data in REFERENCE["mme"]["tasks"].items() for r in _mme_records(tmp_path, task, data)]
    groups = score_groups(records, "subtask")
    for task, data in REFERENCE["mme"]["tasks"].items():
        assert groups[task].mme_score == pytest.approx(data["score"], abs=1e-12), task


def test_mme_rule_with_our_metric_choices(tmp_path):
    """Undefined and unparseable handling is a stated choice: "miss" counts unparseable true-yes as misses."""
    data = REFERENCE["mme"]["tasks"]["position"]
    score = score_yes_no(_mme_records(tmp_path, "position", data))
    official, ours = score.yes_metrics(), score.yes_metrics(unparseable="miss", undefined=float("nan"))
    assert official["recall"] == pytest.approx(data["metrics"]["recall"])
    assert ours["tp"] == official["tp"] and ours["fn"] > official["fn"] and ours["recall"] < official["recall"]
    color = score_yes_no(_mme_records(tmp_path, "color", REFERENCE["mme"]["tasks"]["color"]))
    assert color.yes_metrics()["precision"] == 0.0
    assert math.isnan(color.yes_metrics(undefined=float("nan"))["precision"])


def test_records_of_two_benchmarks_are_not_scored_together(tmp_path):
    pope = _pope_records(tmp_path, REFERENCE["pope"]["scenarios"]["no_true_yes"])
    mme = _mme_records(tmp_path, "count", REFERENCE["mme"]["tasks"]["count"])
    with pytest.raises(ScoringError, match="several benchmarks"):
        score_yes_no(pope + mme)
    assert score_yes_no(pope, rule="mme").rule == "mme"  # an explicit rule always wins
