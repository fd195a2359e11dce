"""vlmflow.verdicts: each claim's criterion gives the outcome its prose promises on intervals whose answer is known,
counts a difference only when the intervals do not overlap, and publishes what the book pastes."""
from __future__ import annotations

import json

import pytest

from vlmflow import verdicts as V
from vlmflow.stats import CI

LAYERS = list(range(8))


def same(ci, n=8):
    return [CI(*ci)] * n


@pytest.mark.parametrize("mass, ratio, outcome", [
    ((0.70, 0.65, 0.75), (4.0, 3.0, 5.0), V.REPRODUCED),
    ((0.40, 0.35, 0.45), (4.0, 3.0, 5.0), V.PARTLY),  # far above its size, but not above 60%
    ((0.23, 0.20, 0.26), (0.67, 0.60, 0.75), V.CONTRADICTED),  # the toy model: below its uniform share
    ((0.35, 0.30, 0.40), (1.00, 0.90, 1.10), V.NOT_REPRODUCED),  # indistinguishable from its size
    ((0.70, 0.60, 0.75), (4.0, 3.0, 5.0), V.PARTLY),  # lower end exactly at 0.60 is not "clearly above"
])
def test_fig1(mass, ratio, outcome):
    v = V.decide_fig1(LAYERS, same(mass), same(ratio), CI(0.35, 0.34, 0.36))
    assert v.outcome == outcome
    assert v.claim == "fig1" and "of 8 layers" in v.measured


def test_fig1_needs_a_majority_of_layers():
    high, low = (0.7, 0.65, 0.75), (0.3, 0.25, 0.35)
    four = [CI(*high)] * 4 + [CI(*low)] * 4  # exactly half the layers: not "more than half"
    ratio = [CI(4, 3, 5)] * 4 + [CI(1, 0.9, 1.1)] * 4
    assert V.decide_fig1(LAYERS, four, ratio, CI(0.05, 0.04, 0.06)).outcome == V.NOT_REPRODUCED
    with pytest.raises(V.VerdictError, match="8 layers, 7 mass"):
        V.decide_fig1(LAYERS, four[:7], ratio, CI(0.05, 0.04, 0.06))


@pytest.mark.parametrize("gen, txt, floor, outcome", [
    ((0.40, 0.33, 0.47), (0.00, 0.00, 0.02), (0.00, 0.00, 0.01), V.REPRODUCED),  # the paper's numbers
    ((0.40, 0.33, 0.47), (0.38, 0.30, 0.45), (0.00, 0.00, 0.01), V.PARTLY),
    ((0.03, 0.01, 0.07), (0.69, 0.60, 0.77), (0.02, 0.01, 0.04), V.CONTRADICTED),  # the toy model's reversal
    ((0.03, 0.01, 0.07), (0.05, 0.01, 0.09), (0.02, 0.01, 0.04), V.NOT_REPRODUCED),
])
def test_finding1(gen, txt, floor, outcome):
    v = V.decide_finding1(CI(*gen), CI(*txt), CI(*floor), txt_forced=CI(0.99, 0.97, 1.0))
    assert v.outcome == outcome
    assert "with the first token forced" in v.measured and v.numbers["txt_forced"] == [0.99, 0.97, 1.0]


def windows(values):
    """Width-2 windows of an 8-layer model, [0,1] .. [6,7], with F1 intervals (f1, f1 - 0.05, f1 + 0.05)."""
    return [(a, a + 1, CI(f, max(0.0, f - 0.05), min(1.0, f + 0.05))) for a, f in zip(range(7), values)]


@pytest.mark.parametrize("values, outcome", [
    ([0.10, 0.20, 0.80, 0.75, 0.30, 0.20, 0.10], V.REPRODUCED),  # best window [2,3], in the middle
    ([0.10, 0.20, 0.40, 0.38, 0.30, 0.20, 0.10], V.PARTLY),  # best and middle, but keeps under half
    ([0.34, 0.20, 0.08, 0.05, 0.04, 0.05, 0.06], V.CONTRADICTED),  # the toy model: [0,1] beats every middle window
    ([0.03, 0.02, 0.03, 0.02, 0.03, 0.02, 0.03], V.NOT_REPRODUCED),  # nothing above the floor
])
def test_finding2(values, outcome):
    v = V.decide_finding2(windows(values), floor=CI(0.02, 0.0, 0.05), n_layers=8)
    assert v.outcome == outcome


def test_finding2_middle_is_the_middle_half_of_the_depth():
    assert not V._middle(0.5, 8) and V._middle(1.5, 8) and V._middle(5.5, 8) and not V._middle(6.5, 8)
    assert V._middle(29.5, 80)  # the paper's window, layers 20-40 of 80 (centre of 20..39)


def bands(accs, chance=0.2):
    return [(s, s + 2, CI(a, a - 0.08, a + 0.08), chance) for s, a in zip(range(0, 8, 2), accs)]


@pytest.mark.parametrize("accs, outcome", [
    ([0.30, 0.73, 0.60, 0.45], V.REPRODUCED),
    ([0.30, 0.40, 0.50, 0.70], V.PARTLY),  # localized, but the peak is in the last band (the toy model)
    ([0.21, 0.20, 0.22, 0.19], V.NOT_REPRODUCED),
    ([0.05, 0.05, 0.05, 0.05], V.CONTRADICTED),
])
def test_finding3(accs, outcome):
    assert V.decide_finding3(bands(accs), n_layers=8, subset="all").outcome == outcome


def test_finding3_without_objects_is_not_reproduced_not_an_error():
    v = V.decide_finding3([(0, 2, CI(float("nan"), float("nan"), float("nan")), 0.1)], n_layers=8)
    assert v.outcome == V.NOT_REPRODUCED and "no band" in v.measured


@pytest.mark.parametrize("full, comp, query, outcome", [
    ((0.85, 0.80, 0.90), (0.81, 0.76, 0.86), (0.61, 0.55, 0.67), V.REPRODUCED),  # the paper's rows
    ((0.95, 0.90, 1.00), (0.90, 0.85, 0.95), (0.88, 0.82, 0.93), V.PARTLY),  # keeps it, query alone as good
    ((0.95, 0.90, 1.00), (0.70, 0.65, 0.75), (0.55, 0.50, 0.60), V.PARTLY),  # beats query, keeps under 90%
    ((0.95, 0.90, 1.00), (0.55, 0.48, 0.62), (0.52, 0.45, 0.60), V.NOT_REPRODUCED),
    ((0.95, 0.90, 1.00), (0.40, 0.35, 0.45), (0.60, 0.55, 0.65), V.CONTRADICTED),
])
def test_table1(full, comp, query, outcome):
    v = V.decide_table1(CI(*full), CI(*comp), CI(*query), template="single-turn template")
    assert v.outcome == outcome
    assert "single-turn template" in v.measured


@pytest.mark.parametrize("alone, says", [((0.60, 0.55, 0.65), "clearly adds to"),
                                         ((0.80, 0.70, 0.90), "adds nothing measurable to"),
                                         ((0.95, 0.92, 0.98), "clearly lowers")])
def test_table1_note_on_the_top_k_tokens_alone(alone, says):
    note = V.topk_alone_note(CI(0.81, 0.76, 0.86), CI(*alone), 5, "two-turn template")
    assert note == (f"Top 5% image tokens alone: ACC {100 * alone[0]:.1f} [{100 * alone[1]:.1f}, {100 * alone[2]:.1f}]; "
                    f"the query {says} them (two-turn template).")


def test_verdict_rejects_unknown_claims_and_outcomes():
    with pytest.raises(V.VerdictError, match="unknown claim 'fig9'"):
        V.Verdict("fig9", V.REPRODUCED, "", "")
    with pytest.raises(V.VerdictError, match="unknown outcome 'sort of'"):
        V.Verdict("fig1", "sort of", "", "")
    with pytest.raises(V.VerdictError, match="expected an interval"):
        V.decide_finding1((0.1, 0.2), CI(0, 0, 0), CI(0, 0, 0))


def test_every_claim_states_its_criterion_and_a_meaning_per_outcome():
    for claim in V.CLAIMS.values():
        assert set(claim.meaning) == set(V.OUTCOMES), claim.id
        text = V.criterion_markdown(claim.id)
        assert claim.criterion in text and claim.paper in text


def test_publish_saves_what_the_book_pastes(tmp_path):
    v = V.decide_finding1(CI(0.03, 0.01, 0.07), CI(0.69, 0.60, 0.77), CI(0.02, 0.01, 0.04))
    v.notes.append("a note")
    v.publish(tmp_path, display=False)
    record = json.loads((tmp_path / "verdict-finding1.json").read_text())
    assert record["outcome"] == V.CONTRADICTED and record["measured"] == v.measured
    assert V.load_verdicts(tmp_path)["finding1"] == record
    items = v.glue_items()
    assert items["verdict"] == V.CONTRADICTED and items["measured"] == v.measured
    box = items["box"]._repr_html_()
    assert 'data-claim="finding1"' in box and 'data-outcome="contradicted"' in box and "<li>a note</li>" in box
    assert "0.03 [0.01, 0.07]" in box  # the numbers the box shows are the decided ones


def test_layer_list_writes_runs():
    assert V.layer_list([7, 0, 1, 2, 5]) == "0-2, 5, 7" and V.layer_list([]) == "none"


def test_an_unchanged_verdict_is_not_rewritten(tmp_path):
    v = V.decide_finding1(CI(0.03, 0.01, 0.07), CI(0.69, 0.60, 0.77), CI(0.02, 0.01, 0.04))
    path = v.save(tmp_path)
    stamp = path.stat().st_mtime_ns
    assert V.decide_finding1(CI(0.03, 0.01, 0.07), CI(0.69, 0.60, 0.77), CI(0.02, 0.01, 0.04)).save(tmp_path) == path
    assert path.stat().st_mtime_ns == stamp
    V.decide_finding1(CI(0.40, 0.33, 0.47), CI(0.0, 0.0, 0.02), CI(0.0, 0.0, 0.01)).save(tmp_path)
    assert json.loads(path.read_text())["outcome"] == V.REPRODUCED


def test_a_tagged_verdict_is_another_model_s_and_never_the_book_s(tmp_path):
    """A verdict on another model (the planted models' chapter) is saved under its tag and left out of the book's
    own verdicts, even when it sorts after the book's own file."""
    own = V.decide_finding1(CI(0.03, 0.01, 0.07), CI(0.69, 0.60, 0.77), CI(0.02, 0.01, 0.04))
    other = V.decide_finding1(CI(1.0, 1.0, 1.0), CI(0.05, 0.0, 0.1), CI(0.02, 0.01, 0.04))
    own.publish(tmp_path / "a", display=False)
    other.publish(tmp_path / "z", display=False, tag="toy_compress")
    assert (tmp_path / "z" / "verdict-finding1@toy_compress.json").is_file()
    assert V.load_verdicts(tmp_path)["finding1"]["outcome"] == own.outcome != other.outcome


def test_video_claims_apply_the_image_rules_and_their_own():
    """The video chapter's verdicts: Finding 1's and Table 1's rules unchanged under their own claims (decided on the
    clip model, so not in the opening page's table of the book's model), and the per-frame and localization rules."""
    route = V.decide_oq_video_route(CI(0.5, 0.4, 0.6), CI(0.1, 0.05, 0.2), CI(0.0, 0.0, 0.05))
    assert route.claim == "oq_video_route" and route.outcome == V.REPRODUCED and "video→generated" in route.measured
    assert "oq_video_route" not in V.CLAIMS and "figures/video" == route.spec.page
    assert V.decide_oq_video_route(CI(0.1, 0.0, 0.2), CI(0.6, 0.5, 0.7), CI(0, 0, 0)).outcome == V.CONTRADICTED
    frames = V.decide_oq_video_frames
    assert frames({"first": CI(0.2, 0.1, 0.3), "last": CI(0.1, 0.02, 0.2)}).outcome == V.REPRODUCED
    assert frames({"first": CI(0.2, 0.1, 0.3), "last": CI(0.0, -0.1, 0.1)}).outcome == V.PARTLY
    assert frames({"first": CI(0.0, -0.02, 0.03), "last": CI(0.0, -0.01, 0.01)}).outcome == V.CONTRADICTED
    assert frames({"first": CI(0.0, -0.2, 0.3)}).outcome == V.NOT_REPRODUCED
    loc = V.decide_oq_video_localize
    assert loc([(0, CI(.2, .1, .3), .2, CI(.4, .3, .5), .33), (1, CI(.6, .5, .7), .2, CI(.8, .7, .9), .33)]
               ).outcome == V.REPRODUCED
    assert loc([(0, CI(.6, .5, .7), .2, CI(.3, .2, .4), .33)]).outcome == V.PARTLY
    assert loc([(0, CI(.05, .0, .1), .2, CI(.1, .05, .2), .33)]).outcome == V.CONTRADICTED
    assert loc([]).outcome == V.NOT_REPRODUCED and "no naming token" in loc([]).measured  # nothing to localize
    rep = V.decide_oq_video_reprompt(CI(.8, .7, .9), CI(.78, .7, .85), CI(.3, .2, .4), k=10)
    assert rep.outcome == V.REPRODUCED and "top 10%" in rep.measured and "full clip" in rep.measured
    for claim in V.CLIP_MODEL_CLAIMS.values():
        assert set(claim.meaning) == set(V.OUTCOMES) and claim.criterion in V.criterion_markdown(claim.id)
