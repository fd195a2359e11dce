"""`vlmflow.toy.evaluate.item_rows`: the model card's questions answered through the core library, one row each (the
rows behind the toy_world and fig3_judge notebooks). Checked on a tiny random LLaVA against independent oracles."""
from __future__ import annotations

import pytest

from tests.tiny import build
from vlmflow.judge import get_judge
from vlmflow.model import wrap
from vlmflow.scoring import normalize_answer, parse_yes_no
from vlmflow.toy.evaluate import _items, item_rows, metrics_of
from vlmflow.toy.questions import scene_questions
from vlmflow.toy.scenes import SceneConfig, make_scene

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
    for r in plain:
        assert r["n_objects"] == len(make_scene(3, "test", r["scene"], SceneConfig()).objects)


def test_exists_rows_name_the_rule_of_their_negative(plain):
    """Each yes/no row carries the rule that drew its question, as the scene's own question set (an independent
    draw from the same seed) records it: None for the ``yes`` question."""
    exists = [r for r in plain if r["kind"] == "exists"]
    assert exists
    for r in exists:
        truth = {qa.question: qa.negative for qa in scene_questions(make_scene(3, "test", r["scene"], SceneConfig()))
                 if qa.kind == "exists"}
        assert r["negative"] == truth[r["question"]]
        assert (r["negative"] is None) == (r["truth"] == "yes")


def test_yes_no_accuracy_split_by_question():
    """A model that checks the colour only: right on every ``yes`` and every colour swap, wrong on every shape swap."""
    def row(negative, correct):
        return {"kind": "exists", "negative": negative, "correct": correct}

    rows = ([row(None, True)] * 4 + [row("color", True)] * 2 + [row("shape", False)] * 2
            + [row("random", True), row("random", False)])
    m = metrics_of(rows, n_scenes=4)
    assert m["exists_acc"] == 0.7
    assert (m["exists_yes_acc"], m["exists_no_color_acc"], m["exists_no_shape_acc"], m["exists_no_random_acc"]) \
        == (1.0, 1.0, 0.0, 0.5)
    assert "exists_no_shape_acc" not in metrics_of([row(None, True)], n_scenes=1)


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


def test_colour_accuracy_of_scenes_that_need_a_lookup():
    """color_multi_acc counts only the colour questions of scenes with two or more objects (one object needs no
    lookup): a model right on every single-object scene and on half of the rest."""
    def row(n_objects, correct):
        return {"kind": "color", "n_objects": n_objects, "correct": correct}

    m = metrics_of([row(1, True)] * 4 + [row(2, True), row(3, False), row(4, True), row(2, False)], n_scenes=8)
    assert (m["color_acc"], m["color_multi_acc"], m["color_multi_n"]) == (0.75, 0.5, 4)
    assert "color_multi_acc" not in metrics_of([row(1, True)], n_scenes=1)
