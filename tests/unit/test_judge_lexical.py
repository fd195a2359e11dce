"""Lexical judge on real COCO captions (shared/data/coco_sample) with object sets stated by hand."""
import json

import pytest

from vlmflow.judge import get_judge
from vlmflow.judge.lexical import chair_dir


@pytest.fixture(scope="module")
def judge():
    return get_judge("lexical")


@pytest.fixture(scope="module")
def captions():
    from vlmflow.data import fetch

    data = json.loads((fetch("coco-sample", progress=False) / "captions.json").read_text())
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["caption"].strip())
    return by_image


# (image id, reference caption, candidate caption, TP, FP, FN) -- sets of COCO categories, stated by hand.
CASES = [
    (139, "A room with chairs, a table, and a woman in it.", "A living area with a television and a table",
     {"dining table"}, {"tv"}, {"chair", "person"}),
    (18575, "Two plates, one with a sandwich and fries, the other with just a sandwich and a pickle.",
     "A burger sitting on a table, with another next to it.", {"sandwich"}, {"dining table"}, set()),
    (25560, "A cat climbing on top of a shelf with a tv",
     "A cat perches on top of an entertainment center in front of a TV.", {"cat", "tv"}, set(), set()),
    (87038, "A person on a skateboard and bike at a skate park.",
     "Athletes performing tricks on a BMX bicycle and a skateboard.", {"skateboard", "bicycle"}, set(), {"person"}),
    (87038, "A skateboarder jumps into the air as he performs a skateboard trick.",
     "a man falls off his skateboard in a skate park.", {"person", "skateboard"}, set(), set()),
    (17627, "Several cars are parked in front of a building.", "A green car has parked on the curb in a parking lot",
     {"car"}, set(), set()),
    (6818, "A standing toilet in a bathroom next to a window.", "a couple of buckets in a white room",
     set(), set(), {"toilet"}),
]


@pytest.mark.parametrize("image_id, reference, candidate, tp, fp, fn", CASES)
def test_real_caption_pairs(judge, captions, image_id, reference, candidate, tp, fp, fn):
    assert reference in captions[image_id] and candidate in captions[image_id]  # real captions of one image
    j = judge.judge(reference, candidate)
    assert {r for r, c in j.tp} == tp and all(r == c for r, c in j.tp)
    assert set(j.fp) == fp and set(j.fn) == fn
    assert j.counts == (len(tp), len(fp), len(fn))  # sets: each category once


def test_empty_candidate_scores_zero_f1(judge):
    j = judge.judge(*CASES[-1][1:3])
    assert (j.precision, j.recall, j.f1) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize("text, categories", [
    ("two dogs, a puppy and the dog", ["dog"]),                          # plurals and synonyms -> one category
    ("men, women, people and a child", ["person"]),                      # irregular plurals
    ("a hot dog next to a dog", ["hot dog", "dog"]),                     # multi-word beats its last word
    ("teddy bears and a bear", ["teddy bear", "bear"]),
    ("wine glasses and knives", ["wine glass", "knife"]),
    ("a baby elephant and a passenger jet", ["elephant", "airplane"]),  # CHAIR double-word rules
    ("a toilet seat", ["toilet"]),
    ("the seat of the toilet", ["toilet"]),                              # CHAIR: that seat is no chair
    ("a seat by the window", ["chair"]),
    ("motor bikes, a sofa and couches", ["motorcycle", "couch"]),
    ("a window and a tree", []),                                         # not COCO categories
])
def test_plurals_synonyms_and_rules(judge, text, categories):
    assert judge.vocabulary.objects(text)[0] == categories


def test_vocabulary_covers_the_80_categories(judge):
    names = [c["name"] for c in json.loads((chair_dir() / "coco_categories.json").read_text())]
    assert len(names) == 80 and set(judge.vocabulary.categories) == set(names)
    for name in names:  # each category's own name finds it
        assert judge.vocabulary.objects(f"there is a {name} here")[0] == [name]
