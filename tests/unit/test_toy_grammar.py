"""Description grammar: every caption parses back to its ground truth; the parser tolerates model output; exact
multiset precision / recall / F1 on known answers."""
import pytest

from vlmflow.toy import grammar
from vlmflow.toy.scenes import SceneConfig, ToyObject, make_scene

R_C = ToyObject("circle", "red", "large")
B_R = ToyObject("ring", "blue", "small")
G_T = ToyObject("triangle", "green", "large")


@pytest.mark.parametrize("config", [SceneConfig(), SceneConfig.for_objects(0, 9), SceneConfig.for_objects(8, 16)])
def test_every_caption_parses_back(config):
    for i in range(100):
        sc = make_scene(0, "train", i, config)
        assert grammar.parse(sc.description) == sc.toy_objects  # same objects, same order


def test_canonical_form():
    assert grammar.describe([R_C, B_R]) == "large red circle , small blue ring"
    assert grammar.describe([]) == "nothing"
    assert grammar.parse("nothing") == []


@pytest.mark.parametrize("text, expected", [
    ("I see a large red circle and also a small blue ring.", [R_C, B_R]),
    ("There is a big red circle, with a little blue ring", [R_C, B_R]),
    ("large red circle , large red circle , large red circle", [R_C] * 3),  # repeats are kept (multiset)
    ("large red circle , small blue ri", [R_C]),  # truncated last phrase names nothing
    ("large red circle , small blue", [R_C]),
    ("two large red circles and a small blue ring", [R_C, R_C, B_R]),
    ("LARGE RED CIRCLE", [R_C]),
    ("red circle", [ToyObject("circle", "red", None)]),  # named but incomplete: can never match exactly
    ("large red , circle", [ToyObject("circle", None, None)]),  # attributes do not leak across a separator
    ("the image shows nothing interesting", []),
    ("", []),
])
def test_parse_tolerance(text, expected):
    assert grammar.parse(text) == expected


def test_score_known_answers():
    s = grammar.score([R_C, B_R, G_T], [R_C, B_R, ToyObject("triangle", "green", "small")])
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)
    # multiset: a repeated object matches only as often as it occurs
    s = grammar.score([R_C], [R_C, R_C])
    assert (s.tp, s.fp, s.fn, s.precision, s.recall) == (1, 1, 0, 0.5, 1.0)
    assert s.f1 == pytest.approx(2 / 3)
    s = grammar.score([R_C, R_C, B_R], [B_R, R_C, R_C])  # order does not matter
    assert s.f1 == 1.0
    # conventions for empty sides
    assert grammar.score([], []).f1 == 1.0
    assert grammar.score([R_C], []).f1 == 0.0 and grammar.score([R_C], []).precision == 1.0
    assert grammar.score([], [R_C]).f1 == 0.0 and grammar.score([], [R_C]).recall == 1.0
    # incomplete objects never match
    assert grammar.score([R_C], grammar.parse("red circle")).tp == 0


def test_score_against_bruteforce_oracle():
    """F1 from multiset counting equals a greedy one-to-one matching oracle on random lists."""
    import random

    rng = random.Random(0)
    pool = [R_C, B_R, G_T, ToyObject("cross", "red", "small")]
    for _ in range(200):
        ref = [rng.choice(pool) for _ in range(rng.randint(0, 5))]
        cand = [rng.choice(pool) for _ in range(rng.randint(0, 5))]
        left, tp = list(ref), 0
        for c in cand:
            if c in left:
                left.remove(c)
                tp += 1
        s = grammar.score(ref, cand)
        assert s.tp == tp and s.fp == len(cand) - tp and s.fn == len(ref) - tp
