"""The sweep engine (vlmflow.sweep) against its oracle: each configuration run alone with ``vlm.generate``.

Greedy tokens must be identical for every preset on tiny random LLaVA, InternVL and Qwen2-VL (M-RoPE positions) and on
the trained toy model when ``data/toy_model`` exists; forced prefixes, recordings, chunking and row dropping must not
change any result."""
import numpy as np
import pytest
import torch

import vlmflow as vf
from tests.tiny import build
from vlmflow.knockout import Knockout
from vlmflow.presets import PRESETS, preset
from vlmflow.sweep import SweepConfig, SweepEngine, SweepError, boundary

MAX_NEW = 8
Q = "describe the image"


def _image(seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return (rng.random((*size, 3)) * 255).astype("uint8")


@pytest.fixture(scope="module", params=["llava", "internvl", "qwen2_vl"])
def vlm(request):
    return vf.wrap(*build(request.param))


def _alone(vlm, image, config, baseline_tokens):
    prefix = baseline_tokens[: config.force_prefix] if config.force_prefix else None
    return vlm.generate(image, Q, knockout=list(config.knockouts) or None, max_new_tokens=MAX_NEW,
                        force_prefix=prefix, record=config.record)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_engine_equals_generate_alone_for_every_preset(vlm, name):
    image = _image()
    configs = preset(name, vlm.num_layers, force_prefix=1)
    results = SweepEngine(vlm, max_new_tokens=MAX_NEW, batch_size=16).run(image, configs, Q)
    base = results[0].token_ids
    assert results[0].config.is_baseline
    for config, res in zip(configs, results):
        gen = _alone(vlm, image, config, base)
        assert res.token_ids == gen.token_ids, config.spec_id
        assert res.finished == gen.finished, config.spec_id
        assert res.text == gen.text


def test_toy_model_engine_equals_generate_alone():
    from vlmflow.model import toy_model_path

    if not (toy_model_path() / "config.json").is_file():
        pytest.skip("no trained toy model at data/toy_model (the tiny models above carry the check)")
    from vlmflow.toy.scenes import make_scene

    vlm = vf.load("toy")
    image = make_scene(0, "test", 0).image
    configs = preset("from-layer", vlm.num_layers)
    results = SweepEngine(vlm, max_new_tokens=24, batch_size=32).run(image, configs, Q)
    for config, res in zip(configs, results):
        assert res.token_ids == vlm.generate(image, Q, knockout=list(config.knockouts) or None,
                                             max_new_tokens=24).token_ids, config.spec_id


def test_recorded_baseline_equals_generate_record():
    vlm = vf.wrap(*build("llava"))
    image = _image(1)
    rec = vf.Record(rows=("last_prompt", "generated"))
    config = SweepConfig(record=rec)
    res = SweepEngine(vlm, max_new_tokens=MAX_NEW).run(image, [config, SweepConfig((Knockout("image", "text"),))])
    gen = vlm.generate(image, Q, record=rec, max_new_tokens=MAX_NEW)
    assert torch.equal(res[0].record.row_positions, gen.record.row_positions)
    torch.testing.assert_close(res[0].record.role_mass, gen.record.role_mass, atol=1e-6, rtol=0)
    torch.testing.assert_close(res[0].record.image_map, gen.record.image_map, atol=1e-6, rtol=0)
    assert res[1].record is None


def test_chunking_and_row_dropping_do_not_change_results():
    vlm = vf.wrap(*build("llava"))
    image = _image(0)
    configs = preset("from-layer", vlm.num_layers)
    ref = SweepEngine(vlm, max_new_tokens=12, batch_size=64, drop_finished=False).run(image, configs)
    lengths = {len(r.token_ids) for r in ref}
    assert any(r.finished for r in ref) and len(lengths) > 1, "rows do not end at different steps: no row dropping"
    for bs in (1, 5):
        out = SweepEngine(vlm, max_new_tokens=12, batch_size=bs).run(image, configs)
        assert [r.token_ids for r in out] == [r.token_ids for r in ref]


def test_forced_prefix_is_a_noop_when_first_token_agrees_and_repairs_it_otherwise():
    vlm = vf.wrap(*build("llava"))
    L = vlm.num_layers
    engine = SweepEngine(vlm, max_new_tokens=MAX_NEW)
    # KO image->generated never changes the first token (predicted by the last prompt position)
    free_gen = SweepConfig((Knockout("image", "generated"),))
    forced_gen = SweepConfig((Knockout("image", "generated"),), force_prefix=1)
    repaired = 0
    for seed in range(6):
        image = _image(seed)
        cfgs = [SweepConfig(), free_gen, forced_gen]
        cfgs += [SweepConfig((Knockout.from_layer("image", t, -1, L),), force_prefix=f)
                 for t in ("text", ("text", "generated")) for f in (0, 1)]
        res = {r.spec_id: r for r in engine.run(image, cfgs)}
        base = res["none"]
        assert res[free_gen.spec_id].first_token_matches_baseline
        assert res[forced_gen.spec_id].token_ids == res[free_gen.spec_id].token_ids
        for c in cfgs[3:]:
            if not c.force_prefix:
                continue
            free = res[SweepConfig(c.knockouts).spec_id]
            forced = res[c.spec_id]
            assert forced.first_token == free.first_token  # the free first token is recorded, not the forced one
            if base.token_ids and not free.first_token_matches_baseline:
                repaired += 1
                assert forced.token_ids[0] == base.token_ids[0]
    assert repaired > 0, "no knockout changed the first token: the repair case is not exercised"


def test_boundary_is_the_first_touched_prompt_row():
    vlm = vf.wrap(*build("llava"))
    batch = vlm.prepare([_image()], Q)
    ids = batch.roles.ids[0].tolist()
    P = len(ids)
    names = batch.roles.names(0)
    first_image = names.index("image")
    first_text_after = next(i for i in range(first_image, P) if names[i] != "image")
    L = vlm.num_layers
    assert boundary(SweepConfig(), ids, L) == P
    assert boundary(SweepConfig((Knockout("image", "generated"),)), ids, L) == P
    assert boundary(SweepConfig((Knockout("image", "query"),)), ids, L) == names.index("query")
    # bos and the system prompt are text but precede the image: causally untouched
    assert boundary(SweepConfig((Knockout("image", "text"),)), ids, L) == first_text_after
    assert boundary(SweepConfig((Knockout("query", "image"),)), ids, L) == P  # the image precedes the query
    assert boundary(SweepConfig((Knockout("image", "text", ()),)), ids, L) == P  # no layer: touches nothing
    assert boundary(SweepConfig(record=vf.Record(rows="last_prompt")), ids, L) == P - 1
    assert first_text_after < P


def test_duplicate_configurations_are_refused():
    vlm = vf.wrap(*build("llava"))
    with pytest.raises(SweepError, match="image:generated@all"):
        SweepEngine(vlm).run(_image(), [SweepConfig((Knockout("image", "generated"),))] * 2)


def test_presets_are_built_from_the_layer_count():
    L = 8
    fl = preset("from-layer", L)
    assert len(fl) == 1 + 3 * L and fl[0].is_baseline
    assert len({c.spec_id for c in fl}) == len(fl)
    all_layers = [c for c in fl if c.label("layer") == -1]
    assert all(c.knockouts[0].layers == tuple(range(L)) for c in all_layers)
    up = preset("upto-layer", L)
    assert {c.knockouts[0].layers for c in up[1:] if c.label("layer") == L - 1} == {tuple(range(L))}
    win = preset("window", L)
    for c in win[1:]:
        a, b = c.label("window_start"), c.label("window_end")
        assert set(c.knockouts[0].layers) == set(range(L)) - set(range(a, b + 1))
    forced = preset("from-layer", L, force_prefix=2)
    assert len(forced) == len(fl) + 3 * L and sum(c.force_prefix == 2 for c in forced) == 3 * L
