"""Judge validation: Cohen's kappa and agreement against hand-computed values; human-label JSONL; labelling page."""
import json

import pytest

from vlmflow.judge import JudgeError, Judgment, get_judge
from vlmflow.judge.label import page_pairs, write_label_page
from vlmflow.judge.validate import HumanLabel, agreement, cohens_kappa, read_labels, write_labels


def test_kappa_on_a_hand_computed_table():
    # rater A yes/no vs rater B yes/no: 20 yes-yes, 5 yes-no, 10 no-yes, 15 no-no (n = 50)
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5 = 0.4
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(a, a) == pytest.approx(1.0)
    assert cohens_kappa(["y", "n"], ["n", "y"]) == pytest.approx(-1.0)
    assert cohens_kappa(["y"] * 4, ["y"] * 4) is None  # undefined: chance agreement is 1
    with pytest.raises(JudgeError, match="equal length"):
        cohens_kappa(["y"], [])


def J(ref, cand, tp):
    from vlmflow.judge.matching import apply_pairs

    return Judgment.from_matching(ref, cand, *apply_pairs(ref, cand, tp))


def test_agreement_against_hand_computed_values():
    truth = [J(list("abc"), list("ad"), [("a", "a")]), J(list("xy"), ["x"], [("x", "x")]), J(["q"], ["q"], [("q", "q")])]
    judged = [J(list("abc"), list("abd"), [("a", "a"), ("b", "b")]), J(list("xy"), ["x"], [("x", "x")]),
              Judgment.failure("timeout")]
    got = agreement(judged, truth, tolerance=0.2)
    # aligned decisions: pair 1 ref a(kept/kept) b(kept/lost) c(lost/lost), cand a(m/m) d(h/h); cand "b" unaligned;
    # pair 2 all 3 agree. 8 decisions, 7 agree; judge T x5, truth T x4: p_e = 5/8*4/8 + 3/8*4/8 = 0.5 -> kappa 0.75
    assert (got.n_pairs, got.n_failed, got.n_decisions, got.n_unaligned) == (3, 1, 8, 1)
    assert got.object_agreement == pytest.approx(7 / 8)
    assert got.kappa == pytest.approx(0.75)
    # pair 1: P 2/3 vs 1/2 (|d| = 1/6 <= 0.2), R 2/3 vs 1/3 (1/3 > 0.2); pair 2 identical
    assert got.precision_agreement == pytest.approx(1.0) and got.recall_agreement == pytest.approx(0.5)
    assert got.mean_abs_diff_precision == pytest.approx(1 / 12) and got.mean_abs_diff_recall == pytest.approx(1 / 6)
    assert got.confusion == {"judge=T,truth=T": 4, "judge=T,truth=F": 1, "judge=F,truth=F": 3}


def test_lexical_judge_agrees_with_itself_and_exact_truth_on_toy():
    exact = get_judge("exact")
    pairs = [("large red circle , small blue ring", "large red circle"), ("small green cross", "small green cross")]
    truth = [exact.judge(r, c) for r, c in pairs]
    got = agreement(truth, truth)
    assert got.object_agreement == 1.0 and got.kappa == pytest.approx(1.0) and got.n_unaligned == 0


def test_human_labels_round_trip_and_errors(tmp_path):
    labels = [HumanLabel("139/a", "A man and a dog.", "A person.", ("man", "dog"), ("person",), (("man", "person"),), "ab"),
              HumanLabel.from_judgment("139/b", "two cars", "a car", J(["car", "car"], ["car"], [("car", "car")]))]
    path = tmp_path / "labels.jsonl"
    write_labels(path, labels)
    back = read_labels(path)
    assert back == labels
    j = back[0].judgment()
    assert j.fn == ("dog",) and j.fp == () and j.recall == 0.5
    assert back[1].judgment().counts == (1, 0, 1)
    bad = dict(labels[0].to_json(), tp=[["cat", "person"]])
    path.write_text(json.dumps(labels[0].to_json()) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(JudgeError, match=r"labels.jsonl line 2: .*'cat'"):
        read_labels(path)


def test_label_page_embeds_pairs_and_prefill(tmp_path):
    pairs = [{"pair_id": "p1", "reference": "A cat </script><b>on</b> a mat", "candidate": "A dog."},
             {"pair_id": "p2", "reference": "Two cars.", "candidate": "A car."}]
    prefill = [J(["cat"], ["dog"], []), Judgment.failure("timeout")]
    page = write_label_page(tmp_path / "label.html", pairs, prefill)
    text = page.read_text()
    assert text.count("</script>") == 2  # the caption's "</script>" cannot close the data block
    got = page_pairs(page)
    assert [g["reference"] for g in got] == [p["reference"] for p in pairs]
    assert got[0]["reference_objects"] == ["cat"] and got[0]["candidate_objects"] == ["dog"] and got[0]["tp"] == []
    assert got[1]["reference_objects"] == []  # a failed judgment pre-fills nothing
    # the download writes exactly the fields read_labels requires
    for field in ("pair_id", "reference", "candidate", "reference_objects", "candidate_objects", "tp"):
        assert f"{field}:" in text
