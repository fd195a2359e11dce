"""Judge contract: P/R/F1 conventions, one-to-one multiset matching, aggregation with failures."""
import pytest

from vlmflow.judge import JudgeError, Judgment, aggregate, get_judge, prf
from vlmflow.judge.matching import MatchError, apply_pairs, match_by_key


@pytest.mark.parametrize("counts, expected", [
    ((3, 1, 4), (3 / 4, 3 / 7, 6 / 11)),
    ((0, 0, 0), (1.0, 1.0, 1.0)),      # both empty: perfect by convention
    ((0, 0, 5), (1.0, 0.0, 0.0)),      # empty candidate: claims nothing false, keeps nothing
    ((0, 2, 0), (0.0, 1.0, 0.0)),      # empty reference: everything hallucinated
    ((0, 2, 3), (0.0, 0.0, 0.0)),
])
def test_prf_conventions(counts, expected):
    assert prf(*counts) == pytest.approx(expected)


def test_f1_is_harmonic_mean_when_defined():
    for tp, fp, fn in [(1, 2, 3), (5, 0, 1), (2, 2, 2), (7, 3, 0)]:
        p, r, f = prf(tp, fp, fn)
        assert f == pytest.approx(2 * p * r / (p + r))


def test_match_by_key_is_one_to_one_and_multiset_aware():
    tp, fp, fn = match_by_key(["dog", "dog", "cat", "car"], ["dog", "car", "car", "bird"])
    assert tp == [("dog", "dog"), ("car", "car")]
    assert fn == ["dog", "cat"]
    assert fp == ["car", "bird"]


def test_apply_pairs_validates_and_derives_fp_fn():
    tp, fp, fn = apply_pairs(["man", "car", "car"], ["Person", "car"], [("man", "person"), ("car", "CAR")])
    assert tp == [("man", "Person"), ("car", "car")] and fp == [] and fn == ["car"]
    with pytest.raises(MatchError, match="'dog' is not in the reference"):
        apply_pairs(["man"], ["person"], [("dog", "person")])
    with pytest.raises(MatchError, match="'person' is not in the candidate"):  # used twice, listed once
        apply_pairs(["man", "woman"], ["person"], [("man", "person"), ("woman", "person")])


def test_aggregate_mean_vs_pooled_and_failures_counted_apart():
    a = Judgment.from_matching(["x"], ["x"], [("x", "x")], [], [])                       # P=R=F1=1
    b = Judgment.from_matching(list("abcd"), list("ae"), [("a", "a")], ["e"], list("bcd"))  # tp1 fp1 fn3
    bad = Judgment.failure("gave up after 5 attempts: HTTP 500")
    agg = aggregate([a, b, bad])
    assert agg.n == 3 and agg.n_failed == 1 and agg.failures == {"gave up after 5 attempts: HTTP 500": 1}
    assert agg.mean_f1 == pytest.approx((1 + 2 / 6) / 2)
    assert agg.mean_precision == pytest.approx((1 + 0.5) / 2)
    assert agg.mean_recall == pytest.approx((1 + 0.25) / 2)
    assert (agg.pooled_tp, agg.pooled_fp, agg.pooled_fn) == (2, 1, 3)
    assert agg.pooled_f1 == pytest.approx(4 / 8)
    assert "1 failed" in agg.aggregation and "mean over 2 images" in agg.aggregation
    empty = aggregate([bad])
    assert empty.mean_f1 is None and empty.pooled_f1 is None and empty.n_failed == 1


def test_judgment_dict_round_trip_and_failure_has_no_scores():
    j = Judgment.from_matching(["a", "b"], ["a"], [("a", "a")], [], ["b"], usage={"prompt_tokens": 3})
    assert Judgment.from_dict(j.to_dict()) == j
    f = Judgment.failure("timeout")
    assert not f.ok and f.f1 is None and f.precision is None


def test_unknown_judge_is_named():
    with pytest.raises(JudgeError, match="'gpt'.*exact, lexical, llm"):
        get_judge("gpt")
