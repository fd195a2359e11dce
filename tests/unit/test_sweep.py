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


def _alone(vlm, image, result, baseline_tokens):
    """The oracle: the configuration run alone, with the knockouts the engine applied (top-K: resolved positions)."""
    config = result.config
    prefix = baseline_tokens[: config.force_prefix] if config.force_prefix else None
    return vlm.generate(image, Q, knockout=list(result.knockouts) or None, max_new_tokens=MAX_NEW,
                        force_prefix=prefix, record=config.record)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_engine_equals_generate_alone_for_every_preset(vlm, name):
    image = _image()
    configs = preset(name, vlm.num_layers, force_prefix=1)
    results = SweepEngine(vlm, max_new_tokens=MAX_NEW, batch_size=16).run(image, configs, Q)
    base = results[0].token_ids
    assert results[0].config.is_baseline
    for config, res in zip(configs, results):
        assert res.config == config
        gen = _alone(vlm, image, res, base)
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
    for name in ("from-layer", "topk"):
        configs = preset(name, vlm.num_layers)
        results = SweepEngine(vlm, max_new_tokens=24, batch_size=32).run(image, configs, Q)
        for config, res in zip(configs, results):
            assert res.token_ids == vlm.generate(image, Q, knockout=list(res.knockouts) or None,
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


def _hidden_per_layer(result, L):
    """Layer -> the image positions the applied knockouts hide there (union over the resolved specs)."""
    out = {layer: set() for layer in range(L)}
    for ko in result.knockouts:
        assert ko.source == "image" and ko.target == ("generated", "text")
        for layer in ko.layer_indices(L):
            out[layer] |= set(ko.source_positions)
    return out


def test_topk_hides_the_image_tokens_outside_an_independent_ranking():
    from vlmflow.selection import middle_band, n_keep

    vlm = vf.wrap(*build("llava"))
    L = vlm.num_layers
    image = _image(3)
    configs = preset("topk", L)
    results = SweepEngine(vlm, max_new_tokens=MAX_NEW, batch_size=8).run(image, configs, Q)
    batch = vlm.prepare(image, Q)
    img = batch.roles.positions("image", 0).numpy()
    N = len(img)
    # oracle scores, computed here without vlmflow.selection: the baseline's recorded attention and hidden-state norms
    gen = vlm.generate(image, Q, record=vf.Record(rows=("last_prompt", "generated")), max_new_tokens=MAX_NEW)
    attention = gen.record.image_map.float().mean(0).numpy()  # [L, N]
    hs = vlm.forward(batch, output_hidden_states=True).output.hidden_states
    norms = np.stack([hs[layer][0, img].float().norm(dim=-1).numpy() for layer in range(L)])
    band = attention[list(middle_band(L))].mean(0)
    changed = 0
    for res in results[1:]:
        k_pct, by = res.config.label("k_percent"), res.config.label("select")
        k = n_keep(k_pct, N)
        hidden = _hidden_per_layer(res, L)
        for layer in range(L):
            assert len(hidden[layer]) == N - k, (res.spec_id, layer)
            score = {"attention": attention[layer], "norm": norms[layer], "band": band}.get(by)
            if score is not None:
                top = np.argsort(-score, kind="stable")[:k]
                assert hidden[layer] == set(img.tolist()) - set(img[top].tolist()), (res.spec_id, layer)
        if by == "band":
            assert len(res.knockouts) == 1  # one set for every layer
        if by == "random" and k < N - 1:
            assert len({frozenset(h) for h in hidden.values()}) > 1, "random sets must be drawn per layer"
        changed += res.token_ids != results[0].token_ids
    assert changed > 0, "no top-K knockout changed the description: the check would not notice a no-op"
    # the random ranking is seeded: the same sets on another image of the same size
    again = SweepEngine(vlm, max_new_tokens=2).run(_image(4), [c for c in configs if c.label("select") == "random"])
    for a, b in zip(again, [r for r in results if r.config.label("select") == "random"]):
        assert a.knockouts == b.knockouts


def test_topk_without_a_recording_baseline_runs_a_hidden_one():
    vlm = vf.wrap(*build("llava"))
    image = _image(5)
    full = SweepEngine(vlm, max_new_tokens=MAX_NEW).run(image, preset("topk", vlm.num_layers))
    only = [c for c in preset("topk", vlm.num_layers, record=None) if c.keep is not None][:6]
    alone = SweepEngine(vlm, max_new_tokens=MAX_NEW).run(image, only)
    by_id = {r.spec_id: r for r in full}
    for r in alone:
        assert r.knockouts == by_id[r.spec_id].knockouts and r.token_ids == by_id[r.spec_id].token_ids


def test_topk_configs_validate_their_knockouts():
    from vlmflow.selection import ImageSelection, SelectionError

    with pytest.raises(SweepError, match="needs knockouts"):
        SweepConfig(keep=ImageSelection(5))
    with pytest.raises(SweepError, match="query:text@all"):
        SweepConfig((Knockout("query", "text"),), keep=ImageSelection(5))
    with pytest.raises(SelectionError, match="'nope'"):
        ImageSelection(5, "nope")
    ids = {c.spec_id for c in preset("topk", 8)}
    assert "image:generated+text@all | keep=top5%:attention" in ids and len(ids) == 1 + 4 * 6
    from vlmflow.presets import topk  # a notebook's subset: exactly the asked rankings and K, in that order

    assert [(c.keep.by, c.keep.k_percent) for c in topk(8, (5, 20), ("random", "attention"))] == [
        ("random", 5.0), ("random", 20.0), ("attention", 5.0), ("attention", 20.0)]
    with pytest.raises(SelectionError, match="'nope'"):
        topk(8, (5,), ("nope",))


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_several_images_in_one_batch_equal_one_image_at_a_time(arch):
    """run_many mixes rows of several images in one decode batch; each row must keep its own image's prefix cache,
    positions (Qwen2-VL: M-RoPE from each image's grid) and baseline; images of another layout run apart."""
    vlm = vf.wrap(*build(arch))
    images = [_image(0), _image(1), _image(2, (48, 40)), _image(3)]  # image 2: another size (another layout on qwen)
    configs = preset("topk", vlm.num_layers, force_prefix=1)[:9] + preset("from-layer", vlm.num_layers)[1:8]
    engine = SweepEngine(vlm, max_new_tokens=MAX_NEW, batch_size=13)  # chunks cut across images
    together = engine.run_many(images, configs, Q)
    for image, res in zip(images, together):
        alone = engine.run(image, configs, Q)
        assert [r.token_ids for r in res] == [r.token_ids for r in alone]
        assert [r.knockouts for r in res] == [r.knockouts for r in alone]
        assert [r.first_token for r in res] == [r.first_token for r in alone]
    assert len({tuple(tuple(r.token_ids) for r in res) for res in together}) > 1, "images give identical sweeps"
