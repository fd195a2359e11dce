"""The training study's row (vlmflow.toy.recipe_study): its sweep configurations share the book's preset keys, its
knockout numbers equal an independent recomputation with vf.generate and the exact judge, the ship criterion, and
the stored study file."""
import json

import pytest

from vlmflow.verdicts import CONTRADICTED, NOT_REPRODUCED, PARTLY, REPRODUCED


def test_study_configs_are_the_presets_all_layer_knockouts_and_quarter_windows():
    from vlmflow.presets import preset
    from vlmflow.toy.recipe_study import study_configs

    for n_layers in (8, 12):
        configs = study_configs(n_layers)
        ids = [c.spec_id for c in configs]
        assert len(ids) == len(set(ids))
        preset_ids = {c.spec_id for c in preset("from-layer", n_layers, force_prefix=1)}
        preset_ids |= {c.spec_id for c in preset("window", n_layers)}
        assert set(ids) <= preset_ids  # the same stored keys as the book's Figure 2 and middle-layer sweeps
        labels = [dict(c.labels) for c in configs]
        ko = [lab for lab in labels if lab["family"] == "from-layer"]
        assert sorted((lab["ko_type"], lab["forced"]) for lab in ko) == sorted(
            (k, f) for k in ("img->gen", "img->txt", "img->txt+gen") for f in (False, True))
        assert all(lab["layer"] == -1 for lab in ko)  # all layers
        windows = [lab for lab in labels if lab["family"] == "window"]
        width = round(n_layers / 4)
        assert {lab["width"] for lab in windows} == {width}
        assert [lab["window_start"] for lab in windows] == list(range(n_layers - width + 1))
        assert sum(lab["family"] == "baseline" for lab in labels) == 1


@pytest.mark.parametrize("f1,f2,expected", [
    (REPRODUCED, NOT_REPRODUCED, True), (CONTRADICTED, REPRODUCED, True), (PARTLY, PARTLY, False),
    (CONTRADICTED, CONTRADICTED, False)])
def test_ship_criterion_is_finding1_or_finding2_reproduced(f1, f2, expected):
    from vlmflow.toy.recipe_study import shows_mechanism

    assert shows_mechanism({"verdict_finding1": f1, "verdict_finding2": f2}) is expected


def test_write_study_keeps_other_recipes_and_refuses_a_missing_file(tmp_path):
    from vlmflow.toy.recipe_study import RecipeStudyError, read_study, write_study

    path = tmp_path / "s" / "study.json"
    write_study(path, {"a": {"row": {"x": 1}}})
    write_study(path, {"b": {"row": {"x": 2}}})
    write_study(path, {"a": {"row": {"x": 3}}})
    assert read_study(path) == {"a": {"row": {"x": 3}}, "b": {"row": {"x": 2}}}
    assert "criterion" in json.loads(path.read_text())
    with pytest.raises(RecipeStudyError, match="no stored recipe study"):
        read_study(tmp_path / "missing.json")


@pytest.mark.skipif(not __import__("pathlib").Path("data/toy_model/config.json").is_file(),
                    reason="needs the shipped toy model")
def test_measured_knockouts_equal_an_independent_recomputation(tmp_path):
    """Each all-layer knockout F1 in the row is the mean over images of the exact judge's F1 between the knocked-out
    and the unmasked greedy descriptions, recomputed here with vf.generate (no sweep engine, no store)."""
    import numpy as np

    import vlmflow as vf
    from vlmflow.judge import get_judge
    from vlmflow.toy.recipe_study import measure
    from vlmflow.toy.scenes import make_scene

    n = 3
    row = measure("data/toy_model", tmp_path, n_images=n, quality_scenes=4, n_resamples=100, progress=False)
    vlm = vf.load("data/toy_model", dtype="float32")
    images = [make_scene(0, "test", i).image for i in range(n)]
    base = [g.text for g in vlm.generate(images, "describe the image", max_new_tokens=64)]
    judge = get_judge("exact")
    for key, target in (("ko_gen", "generated"), ("ko_txt", "text"), ("ko_floor", ("text", "generated"))):
        ko = vf.Knockout("image", target)
        cut = [g.text for g in vlm.generate(images, "describe the image", knockout=ko, max_new_tokens=64)]
        expected = np.mean([judge.judge(b, c).f1 for b, c in zip(base, cut)])
        assert row[key] == pytest.approx(expected), key
        assert row[f"{key}_low"] <= row[key] <= row[f"{key}_high"]
    assert row["n_layers"] == 8 and row["n_images"] == n
    assert 0 < row["text_keys"] < 1 and 0 <= row["text_attention"] <= 1
    assert row["shows_mechanism"] == (REPRODUCED in (row["verdict_finding1"], row["verdict_finding2"]))
