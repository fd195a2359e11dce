"""vlmflow.sweep_scores: sweeps run through the store without recomputation, judged against baseline and truth.

Oracles: the toy grammar's own scorer (vlmflow.toy.grammar.score) for F1, hand-computed P/R/F1, the scene generator
for ground truth, Knockout.outside_window and the `window` preset for window configurations, and the store's own
key listing for what was computed."""
import pandas as pd
import pytest

from vlmflow.judge import get_judge
from vlmflow.judge.base import Judge, Judgment
from vlmflow.knockout import Knockout
from vlmflow.presets import preset
from vlmflow.sweep import SweepConfig
from vlmflow.sweep_scores import (
    BASELINE_SPEC,
    SweepScoreError,
    full_knockout_config,
    judge_pairs,
    score_rows,
    stored_sweep,
    truth_descriptions,
    window_configs,
)
from vlmflow.toy import grammar
from vlmflow.toy.scenes import make_scene

REF = "small red circle , large blue square , small green ring"


def _rows(texts: dict[str, dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"image": im, "spec_id": spec, "text": text}
                         for im, specs in texts.items() for spec, text in specs.items()])


def test_baseline_spec_is_the_unmasked_configuration():
    assert SweepConfig().spec_id == BASELINE_SPEC


def test_score_rows_against_baseline_and_truth_match_grammar_oracle():
    truth = {"a": REF, "b": "large yellow cross"}
    rows = _rows({"a": {BASELINE_SPEC: "small red circle , large blue square", "ko": "small red circle",
                        "ko2": "large purple ring"},
                  "b": {BASELINE_SPEC: "large yellow cross", "ko": ""}})
    out = score_rows(rows, get_judge("exact"), truth=truth, progress=False)
    # hand-computed: "small red circle" vs the 2-object baseline: P 1, R 1/2, F1 2/3
    ko = out[(out.image == "a") & (out.spec_id == "ko")].iloc[0]
    assert (ko.precision_baseline, ko.recall_baseline) == (1.0, 0.5)
    assert ko.f1_baseline == pytest.approx(2 / 3)
    for r in out.itertuples():
        base = rows[(rows.image == r.image) & (rows.spec_id == BASELINE_SPEC)].text.iloc[0]
        for ref, got in ((base, r.f1_baseline), (truth[r.image], r.f1_truth)):
            oracle = grammar.score(grammar.parse(ref), grammar.parse(r.text))
            assert got == pytest.approx(oracle.f1), (r.image, r.spec_id, ref, r.text)
    assert (out[out.spec_id == BASELINE_SPEC].f1_baseline == 1.0).all()
    assert out.f1_baseline.between(0, 1).all() and out.failed_baseline.isna().all()


def test_score_rows_names_an_image_without_baseline():
    rows = _rows({"a": {BASELINE_SPEC: REF}, "img-7": {"ko": REF}})
    with pytest.raises(SweepScoreError, match="img-7"):
        score_rows(rows, get_judge("exact"), progress=False)
    with pytest.raises(SweepScoreError, match="ground truth"):
        score_rows(rows[rows.image == "a"], get_judge("exact"), truth={"b": REF}, progress=False)


class CountingJudge(Judge):
    """Exact judge that counts the pairs it is asked (to see what the cache spares)."""

    name, version = "counting", "1"

    def __init__(self):
        self.inner, self.asked = get_judge("exact"), []

    def judge(self, reference, candidate) -> Judgment:
        self.asked.append((reference, candidate))
        return self.inner.judge(reference, candidate)


def test_judge_pairs_judges_each_distinct_pair_once_and_reuses_its_cache(tmp_path):
    pairs = [(REF, "small red circle"), (REF, "small red circle"), (REF, ""), ("large red ring", "large red ring")]
    judge = CountingJudge()
    first = judge_pairs(judge, pairs, tmp_path, progress=False)
    assert len(judge.asked) == 3 and len(first) == 4
    assert list(first.candidate) == [c for _, c in pairs]  # input order, duplicates kept
    again = CountingJudge()
    second = judge_pairs(again, pairs + [(REF, REF)], tmp_path, progress=False)
    assert again.asked == [(REF, REF)]  # only the new pair
    pd.testing.assert_frame_equal(second.iloc[:4], first)
    assert second.f1.iloc[-1] == 1.0


def test_truth_descriptions_are_the_scenes_own_and_keys_are_checked():
    truth = truth_descriptions("toy-test", ["toy-test-00000", "toy-test-00003"], seed=1)
    assert truth == {"toy-test-00000": make_scene(1, "test", 0).description,
                     "toy-test-00003": make_scene(1, "test", 3).description}
    with pytest.raises(SweepScoreError, match="000000139"):
        truth_descriptions("toy-test", ["000000139"])


def test_window_configs_show_the_image_only_inside_the_window():
    n = 8
    configs = window_configs(n, (0.125, 0.25, 0.5, 0.75))
    assert {c.label("width") for c in configs} == {1, 2, 4, 6}
    for c in configs:
        a, b = c.label("window_start"), c.label("window_end")
        assert b - a + 1 == c.label("width") and 0 <= a <= b < n
        (ko,) = c.knockouts
        assert ko == Knockout.outside_window("image", ("text", "generated"), a, b, n)
        assert set(ko.layer_indices(n)) == set(range(n)) - set(range(a, b + 1))
    # every window of the preset is one of these (same spec ids: they share stored results)
    preset_ids = {c.spec_id for c in preset("window", n) if c.knockouts}
    assert preset_ids <= {c.spec_id for c in configs}
    assert len({c.spec_id for c in configs}) == len(configs)
    starts = sorted(c.label("window_start") for c in configs if c.label("width") == 6)
    assert starts == [0, 1, 2]
    with pytest.raises(SweepScoreError, match="2 decoder layers"):
        window_configs(1)


def test_full_knockout_hides_the_image_in_every_layer():
    (ko,) = full_knockout_config().knockouts
    assert set(ko.layer_indices(8)) == set(range(8))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from tests.tiny import build

    model, processor = build("llava")
    folder = tmp_path_factory.mktemp("tiny_llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def test_stored_sweep_computes_only_what_is_missing(tiny_folder, tmp_path, monkeypatch):
    import vlmflow.model as model_module

    loads = []
    real_load = model_module.load
    monkeypatch.setattr(model_module, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))

    def configs(n_layers):
        return preset("from-layer", n_layers)[:3]

    kw = dict(model=tiny_folder, data="toy-test", max_new_tokens=4, progress=False)
    rows, n_layers = stored_sweep(tmp_path, configs_for=configs, n_images=2, **kw)
    assert len(loads) == 1 and rows.attrs["computed_images"] == 2
    assert sorted(rows.image.unique()) == ["toy-test-00000", "toy-test-00001"]
    assert set(rows.spec_id) == {c.spec_id for c in configs(n_layers)} and len(rows) == 6
    # everything stored: same rows, and the model is not even loaded
    again, n_again = stored_sweep(tmp_path, configs_for=configs, n_images=2, **kw)
    assert len(loads) == 1 and again.attrs["computed_images"] == 0 and n_again == n_layers
    pd.testing.assert_frame_equal(again.drop(columns=["token_ids"]), rows.drop(columns=["token_ids"]))
    # one more image: only it is computed; fewer images: only those rows come back
    more, _ = stored_sweep(tmp_path, configs_for=configs, n_images=3, **kw)
    assert len(loads) == 2 and more.attrs["computed_images"] == 1 and len(more) == 9
    fewer, _ = stored_sweep(tmp_path, configs_for=configs, n_images=1, **kw)
    assert set(fewer.image) == {"toy-test-00000"} and len(loads) == 2
    # other settings never mix: another folder under the same results folder
    other, _ = stored_sweep(tmp_path, configs_for=configs, n_images=1, **{**kw, "max_new_tokens": 3})
    assert other.attrs["store"] != rows.attrs["store"] and other.attrs["computed_images"] == 1
