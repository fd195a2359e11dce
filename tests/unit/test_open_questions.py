"""The open-question chapters' compute against known answers: paraphrases stay in the toy vocabulary, each question
names the object its answer is about, routes and verdicts follow their stated rules, entropy and step similarity
equal their definitions, the knockout effect per position counts exactly the changed tokens, and a judge's
agreement with labels equals Cohen's kappa of the same decisions."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from vlmflow import verdicts as V
from vlmflow.complexity import complexity_scene, image_entropy, rank_by_object_count
from vlmflow.gen_steps import position_effect, step_rows
from vlmflow.human_eval import _kappa_of_codes, agreement_intervals, decision_rows, validate_judges
from vlmflow.judge import get_judge
from vlmflow.judge.validate import HumanLabel, cohens_kappa
from vlmflow.query_kinds import KINDS, kind_questions, paraphrase, pathway, query_items
from vlmflow.roles import ROLES
from vlmflow.stats import CI
from vlmflow.toy.questions import vocabulary
from vlmflow.toy.scenes import make_scene


def test_paraphrases_use_only_the_toy_vocabulary_and_differ_from_the_trained_question():
    words = set(vocabulary())
    for i in range(12):
        for q in kind_questions(make_scene(0, "test", i), i):
            p = paraphrase(q.kind, q.question)
            assert p != q.question and set(p.split()) <= words, (q.question, p)


def test_each_question_names_the_object_its_answer_is_about():
    seen = set()
    for i in range(20):
        scene = make_scene(0, "test", i)
        for q in kind_questions(scene, i):
            seen.add((q.kind, q.answer if q.kind == "exists" else None))
            if q.named is None:
                assert q.kind in ("describe", "count") or q.answer == "no"
                continue
            obj = scene.objects[q.named]
            if q.kind == "color":
                assert obj.object.color == q.answer and obj.object.shape in q.question
            if q.kind == "position":
                assert obj.position == q.answer and f"{obj.object.color} {obj.object.shape}" in q.question
            if q.kind == "exists":
                assert q.answer == "yes" and f"{obj.object.color} {obj.object.shape}" in q.question
    assert ("exists", "yes") in seen and ("exists", "no") in seen  # balanced by scene index
    items = query_items(3)
    assert len({it.key for it in items}) == len(items) and {dict(it.labels)["kind"] for it in items} <= set(KINDS)


def test_pathway_follows_its_rules():
    one, half, zero = CI(1, 1, 1), CI(.5, .4, .6), CI(0, 0, .1)
    assert pathway(one, zero, zero) == "text tokens"
    assert pathway(zero, one, zero) == "generated tokens"
    assert pathway(half, CI(.5, .45, .55), zero) == "either route"
    assert pathway(half, half, CI(.5, .3, 1.0)) == "no image needed"
    assert pathway(CI(.1, 0, .2), CI(.1, 0, .2), zero) == "both routes"


def test_image_entropy_is_normalised_shannon_entropy():
    assert image_entropy(np.ones(64)) == pytest.approx(1.0)
    assert image_entropy(np.eye(64)[3]) == pytest.approx(0.0)
    assert image_entropy([0.5, 0.5, 0, 0]) == pytest.approx(math.log(2) / math.log(4))
    assert math.isnan(image_entropy(np.zeros(4)))


def test_complexity_levels_hold_what_they_say():
    for k in (1, 5, 8):
        assert len(complexity_scene("objects", k, 0).objects) == k
    plain, noisy = complexity_scene("clutter", 0.0, 2), complexity_scene("clutter", 1.0, 2)
    assert plain.toy_objects == noisy.toy_objects and plain.image.tobytes() != noisy.image.tobytes()


def _att(maps: list[np.ndarray], image_mass: list[float]) -> pd.DataFrame:
    rows = []
    for step, (m, im) in enumerate(zip(maps, image_mass)):
        row = {"item": "a", "position": 10 + step, "layer": 0, "image_map": m}
        for r in ROLES:
            row[f"mass_{r}"] = {"image": im, "query": 1 - im}.get(r, 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def test_step_rows_similarity_and_mass_are_their_definitions():
    e0, e1 = np.eye(4)[0], np.eye(4)[1]
    steps = step_rows(_att([e0, e0, e1], [0.2, 0.3, 0.4])).sort_values("step")
    assert steps.step.tolist() == [0, 1, 2] and steps.rel_step.tolist() == [0, 0.5, 1]
    assert math.isnan(steps.sim_prev.iloc[0]) and steps.sim_prev.iloc[1] == pytest.approx(1.0)
    assert steps.sim_prev.iloc[2] == pytest.approx(0.0)
    assert np.allclose(steps.mass_image + steps.mass_text, 1.0) and steps.mass_image.tolist() == [0.2, 0.3, 0.4]


def test_position_effect_counts_the_token_at_each_forced_position():
    rows = pd.DataFrame([
        {"item": "a", "family": "baseline", "token_ids": [5, 6, 7], "ko_type": "none", "forced_k": np.nan},
        {"item": "a", "family": "position", "token_ids": [9], "ko_type": "img->gen", "forced_k": 0},
        {"item": "a", "family": "position", "token_ids": [5, 6], "ko_type": "img->gen", "forced_k": 1},  # 6 kept
        {"item": "a", "family": "position", "token_ids": [5, 6, 7, 8], "ko_type": "img->gen", "forced_k": 3},
        {"item": "a", "family": "position", "token_ids": [5, 6, 7], "ko_type": "img->gen", "forced_k": 4},
    ])
    pe = position_effect(rows).set_index("k")
    assert pe.same.to_dict() == {0: 0.0, 1: 1.0, 3: 0.0}  # k=3: the baseline ended, the knockout wrote on


def test_agreement_intervals_equal_cohens_kappa_of_the_decisions():
    codes = np.array([3, 3, 0, 1, 2, 0, 3])
    assert _kappa_of_codes(codes) == pytest.approx(cohens_kappa((codes // 2).tolist(), (codes % 2).tolist()))
    exact = get_judge("exact")
    pairs = [("small red circle , large blue ring", "small red circle"),
             ("small green cross", "small green cross , large red square")]
    truth = exact.judge_many(pairs, progress=False)
    d = decision_rows(truth, truth, ["x", "y"])
    agree, kappa = agreement_intervals(d, n_resamples=50)
    assert agree == CI(1.0, 1.0, 1.0) and kappa.estimate == pytest.approx(1.0)


def test_validate_judges_measures_a_judge_against_labels_and_never_runs_llm_without_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ref, cand = "small red circle , large blue ring", "small red circle"
    j = get_judge("exact").judge(ref, cand)
    right = HumanLabel.from_judgment("p", ref, cand, j, labeller="t")
    wrong = HumanLabel("q", ref, cand, j.reference_objects, j.candidate_objects, (), "t")  # says the circle is lost
    report = validate_judges([right, wrong], ["exact", "llm"])
    assert report["n_labels"] == 2 and "not_run" in report["judges"]["llm"]
    # the exact judge keeps the circle twice: 3 of 4 reference decisions and 1 of 2 candidate decisions agree
    assert report["judges"]["exact"]["object_agreement"] == pytest.approx(4 / 6)


def test_rank_by_object_count_orders_by_instances():
    class Sample:
        image_ids = [1, 2, 3]

        def annotations(self, image_id):
            return [{"category_id": c} for c in {1: [1], 2: [1, 1, 2], 3: []}[image_id]]

    r = rank_by_object_count(Sample())
    assert r.image_id.tolist() == [2, 1, 3] and r.n_categories.tolist() == [2, 1, 0]


@pytest.mark.parametrize("decide,args,outcome", [
    (V.decide_oq_queries, ({"a": (CI(1, 1, 1), CI(0, 0, .1))},), V.REPRODUCED),
    (V.decide_oq_queries, ({"a": (CI(0, 0, .1), CI(1, 1, 1)), "b": (CI(0, 0, .1), CI(1, .9, 1))},), V.CONTRADICTED),
    (V.decide_oq_complexity, ({"1": (CI(1, 1, 1), CI(0, 0, .1)), "2": (CI(.5, .3, .7), CI(.5, .3, .7))},), V.PARTLY),
    (V.decide_nc_judge, (CI(.97, .95, .99), CI(.8, .7, .9)), V.REPRODUCED),
    (V.decide_nc_judge, (CI(.7, .6, .75), CI(.3, .2, .4)), V.CONTRADICTED),
    (V.decide_nc_steps, (CI(.0, -.02, .02), CI(.9, .8, .95)), V.REPRODUCED),
    (V.decide_nc_steps, (CI(.2, .1, .3), CI(.9, .8, .95)), V.CONTRADICTED),
    (V.decide_nc_steps, (CI(.0, -.2, .2), CI(.3, .1, .4)), V.NOT_REPRODUCED),
])
def test_open_question_verdicts_follow_their_criteria(decide, args, outcome):
    assert decide(*args).outcome == outcome
