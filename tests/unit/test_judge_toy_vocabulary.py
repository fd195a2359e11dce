"""Judging toy descriptions at the paper's object level: `ExactJudge(match_on=...)` and the toy vocabulary for the
lexical judge (`toy.grammar.write_chair_lists`), used by the fig3_judge notebook to validate judges. Known answers."""
from __future__ import annotations

import pytest

from vlmflow.judge import JudgeError, get_judge
from vlmflow.toy.grammar import write_chair_lists
from vlmflow.toy.questions import plural
from vlmflow.toy.scenes import SHAPES

REF = "small red circle , large blue square"
CAND = "large green circle , small red ring"


def test_shape_only_matching_ignores_colour_and_size():
    triple = get_judge("exact").judge(REF, CAND)
    shape = get_judge("exact", match_on=("shape",)).judge(REF, CAND)
    assert triple.counts == (0, 2, 2) and triple.f1 == 0.0
    assert shape.counts == (1, 1, 1) and shape.f1 == pytest.approx(0.5)  # circle kept; square lost, ring new
    assert shape.tp == (("small red circle", "large green circle"),)
    colour = get_judge("exact", match_on=("color",)).judge(REF, CAND)
    assert colour.counts == (1, 1, 1)  # red = red
    assert get_judge("exact", match_on=("shape",)).provenance()["match_on"] == ["shape"]


def test_unknown_attribute_is_named():
    with pytest.raises(JudgeError, match="weight"):
        get_judge("exact", match_on=("shape", "weight"))


def test_lexical_judge_reads_toy_shapes_as_sets(tmp_path):
    folder = write_chair_lists(tmp_path / "chair")
    judge = get_judge("lexical", chair_folder=folder)
    j = judge.judge("two red circles , a small circle and a large cross", "a ring , three circles")
    assert j.reference_objects == ("circle", "cross") and j.candidate_objects == ("ring", "circle")
    assert j.counts == (1, 1, 1)
    every = judge.judge(" , ".join(f"small red {s}" for s in SHAPES), " , ".join(plural(s) for s in SHAPES))
    assert every.f1 == 1.0 and len(every.tp) == len(SHAPES)  # every shape and its plural is a word of the vocabulary
    assert judge.judge("small red square", "large purple square").f1 == 1.0  # colours and sizes are not objects
