"""Exact judge on generated toy scenes: ground truth from the scene, independent oracle grammar.score."""
import dataclasses
import random

import pytest

from vlmflow.judge import get_judge
from vlmflow.toy import grammar
from vlmflow.toy.scenes import COLORS, SceneConfig, ToyObject, make_scenes


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(7, 12, "test", SceneConfig(min_objects=3, max_objects=6))


@pytest.fixture(scope="module")
def judge():
    return get_judge("exact")


def test_caption_against_itself_is_perfect(scenes, judge):
    for scene in scenes:
        j = judge.judge(scene.description, scene.description)
        assert (j.precision, j.recall, j.f1) == (1.0, 1.0, 1.0)
        assert len(j.tp) == len(scene.objects) and not j.fp and not j.fn


def test_removed_added_altered_objects(scenes, judge):
    rng = random.Random(0)
    for scene in scenes:
        truth = scene.toy_objects
        n = len(truth)
        # removed: k objects lost -> P = 1, R = (n - k) / n
        k = rng.randint(1, n - 1)
        kept = truth[k:]
        j = judge.judge(scene.description, grammar.describe(kept))
        assert j.counts == (n - k, 0, k) and j.precision == 1.0 and j.recall == pytest.approx((n - k) / n)
        # added: two new objects (a shape absent from the scene) -> P = n / (n + 2), R = 1
        extra = [ToyObject("ring", "red", "small"), ToyObject("cross", "blue", "large")]
        extra = [o for o in extra if o not in truth]
        j = judge.judge(scene.description, grammar.describe(truth + extra))
        assert j.counts == (n, len(extra), 0) and j.precision == pytest.approx(n / (n + len(extra)))
        # altered: one object's colour changed -> one FP and one FN; per-attribute: shape and size still perfect
        i = rng.randrange(n)
        new_color = next(c for c in COLORS if c != truth[i].color)
        altered = list(truth)
        altered[i] = dataclasses.replace(truth[i], color=new_color)
        j = judge.judge(scene.description, grammar.describe(altered))
        oracle = grammar.score(truth, altered)
        assert j.counts == (oracle.tp, oracle.fp, oracle.fn)
        assert j.f1 == pytest.approx(oracle.f1)
        if altered[i] not in truth:
            assert j.counts == (n - 1, 1, 1)
        attrs = j.details["attributes"]
        assert attrs["shape"]["f1"] == 1.0 and attrs["size"]["f1"] == 1.0
        assert attrs["color"]["tp"] == j.counts[0] and attrs["color"]["fp"] == j.counts[1]
        assert j.details["count"] == {"reference": n, "candidate": n, "equal": True}


def test_matches_grammar_score_on_random_pairs(scenes, judge):
    """Any two scenes' captions: counts and F1 equal the toy grammar's own scorer (an independent oracle)."""
    for a in scenes:
        for b in scenes[:4]:
            j, oracle = judge.judge(a.description, b.description), grammar.score(a.toy_objects, b.toy_objects)
            assert j.counts == (oracle.tp, oracle.fp, oracle.fn)
            assert (j.precision, j.recall, j.f1) == pytest.approx((oracle.precision, oracle.recall, oracle.f1))


def test_free_text_and_multiset(judge):
    j = judge.judge("two small red circles and a large blue square", "a small red circle . large blue square")
    assert j.counts == (2, 0, 1)
    assert j.fn == ("small red circle",)
    assert j.details["count"] == {"reference": 3, "candidate": 2, "equal": False}
