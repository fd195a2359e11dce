"""`vlmflow.toy.evaluate.item_rows`: the model card's questions answered through the core library, one row each (the
rows behind the toy_world and fig3_judge notebooks). Checked on a tiny random LLaVA against independent oracles."""
from __future__ import annotations

import pytest

from tests.tiny import build
from vlmflow.judge import get_judge
from vlmflow.model import wrap
from vlmflow.scoring import normalize_answer, parse_yes_no
from vlmflow.toy.evaluate import _items, item_rows
from vlmflow.toy.scenes import SceneConfig

N = 4


@pytest.fixture(scope="module")
def vlm():
    model, processor = build("llava")
    return wrap(model, processor, name="tiny-llava")


@pytest.fixture(scope="module")
def plain(vlm):
    return item_rows(vlm, n=N, seed=3, progress=False)


def test_rows_are_the_model_cards_questions(plain):
    """Same scenes, same question draws as toy.evaluate (which the model card reports), each asked once."""
    expected = sorted((it.scene, it.kind, it.question, it.answer) for it in _items(N, 3, "test", SceneConfig()))
    got = sorted((r["scene"], r["kind"], r["question"], r["truth"]) for r in plain)
    assert got == expected
    assert {r["scene"] for r in plain} == set(range(N))


def test_scores_follow_the_scoring_rules(plain):
    exact = get_judge("exact")
    for r in plain:
        if r["kind"] == "describe":
            j = exact.judge(r["truth"], r["answer"])
            assert r["f1"] == j.f1 and r["correct"] == (j.f1 == 1.0)
            assert r["f1_shape"] == j.details["attributes"]["shape"]["f1"]
            assert r["count_equal"] == (r["n_truth"] == r["n_answer"])
        elif r["kind"] == "exists":
            assert r["parsed"] == parse_yes_no(r["answer"])
            assert r["correct"] == (r["parsed"] is not None and r["parsed"] == r["truth"])
        else:
            assert r["correct"] == (normalize_answer(r["answer"]) is not None
                                    and normalize_answer(r["answer"]) == normalize_answer(r["truth"]))


def test_full_knockout_makes_answers_independent_of_the_image(vlm):
    """Under KO image -> text+generated in every layer no text or generated token can read the image: one and the same
    question (no padding differences: every describe prompt is identical) gets one and the same answer on every
    scene."""
    rows = item_rows(vlm, n=N, seed=3, knockout=True, kinds=("describe", "count"), progress=False)
    for kind in ("describe", "count"):
        same_question = [r for r in rows if r["kind"] == kind and r["question"] in ("describe the image",
                                                                                  "how many objects ?")]
        assert len(same_question) == N
        assert len({r["answer"] for r in same_question}) == 1, kind
