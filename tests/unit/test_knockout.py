"""Knockout: specs, layer-set conventions, and the attention function against independent oracles.

Oracles: the same weights under eager attention given a 4D additive mask built here from the role layout (causal +
blocked (target row, source column) pairs), and, for layer subsets, an eager attention registered by this test that
takes a different hand-built mask per layer index."""
import pytest
import torch

import vlmflow as vf
from tests.oracles import LAYER_MASKS, layer_mask_attention
from tests.oracles import random_image as _image
from tests.oracles import role_names as _names
from tests.tiny import build
from vlmflow.errors import LayerIndexError, UnknownRoleError, UnsupportedAttentionError

TEXT = {"bos", "system", "user", "query", "assistant"}
N_LAYERS = 4


@pytest.fixture(scope="module")
def models():
    from transformers import AttentionInterface

    AttentionInterface.register("test_oracle", layer_mask_attention)
    model, processor = build("llava")
    vlm = vf.wrap(model, processor)
    plain, _ = build("llava")  # untouched sdpa model, same weights
    eager, _ = build("llava")
    eager.set_attn_implementation({"text_config": "eager"})
    layered, _ = build("llava")
    layered.set_attn_implementation({"text_config": "test_oracle"})
    return vlm, plain, eager, layered


def _mask(names, pairs):
    """Additive float mask (1, 1, T, T): causal + every (row, col) with row role in tgt and col role in src."""
    T = len(names)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    for src, tgt in pairs:
        for i in range(T):
            if names[i] in tgt:
                for j in range(i + 1):
                    if names[j] in src:
                        allowed[i, j] = False
    return torch.zeros(T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]


def _layer_masks(names, specs):
    """specs: list of (src set, tgt set, layers) -> {layer: mask}."""
    return {layer: _mask(names, [(s, t) for s, t, layers in specs if layer in layers]) for layer in range(N_LAYERS)}


# ---- specs --------------------------------------------------------------------------------------------------
def test_parse_and_spec_id_round_trip():
    ko = vf.Knockout.parse("image:generated@0-3,7")
    assert ko == vf.Knockout("image", "generated", [7, 3, 2, 1, 0, 0])
    assert ko.layers == (0, 1, 2, 3, 7) and ko.spec_id == "image:generated@0-3,7"
    assert vf.Knockout.parse(ko.spec_id) == ko
    multi = vf.Knockout(["query", "image"], "generated")
    assert multi.spec_id == "image+query:generated@all" and vf.Knockout.parse(multi.spec_id) == multi
    assert vf.Knockout.parse("image:text@5").layers == (5,)


def test_layer_set_conventions():
    L = 32
    assert vf.Knockout.from_layer("image", "text", -1, L).layers == tuple(range(32))  # -1: every layer
    assert vf.Knockout.from_layer("image", "text", 15, L).layers == tuple(range(16, 32))  # index > l
    assert vf.Knockout.from_layer("image", "text", 31, L).layers == ()  # L - 1: none
    up = vf.Knockout.upto_layer("image", "text", 15, L).layers
    assert set(up) | set(vf.Knockout.from_layer("image", "text", 15, L).layers) == set(range(32))
    assert up == tuple(range(16))
    win = vf.Knockout.outside_window("image", "text", 4, 20, L).layers
    assert set(win) == set(range(32)) - set(range(4, 21))


def test_spec_errors_name_the_culprit():
    with pytest.raises(UnknownRoleError, match="'imag'"):
        vf.Knockout("imag", "generated")
    with pytest.raises(UnknownRoleError, match="'gen'"):
        vf.Knockout.parse("image:gen@0-3")
    with pytest.raises(LayerIndexError, match="-2"):
        vf.Knockout("image", "text", [-2])
    with pytest.raises(LayerIndexError, match="'0-x'"):
        vf.Knockout.parse("image:text@0-x")
    ko = vf.Knockout("image", "text", [1, 9])
    with pytest.raises(LayerIndexError, match=r"layer 9 .*4 decoder layers \(valid 0-3\)"):
        ko.layer_indices(4)


# ---- against oracles ------------------------------------------------------------------------------------------
def test_empty_knockout_is_bit_identical_to_sdpa(models):
    vlm, plain, _, _ = models
    batch = vlm.prepare([_image(0), _image(1)], ["describe the image", "what is in this picture ?"])
    with torch.no_grad():
        ref = plain(**batch.inputs).logits
    for ko in (None, [], vf.Knockout.from_layer("image", "text", N_LAYERS - 1, N_LAYERS)):
        assert torch.equal(vlm.forward(batch, knockout=ko).logits, ref)
    with torch.no_grad():
        out = plain.generate(**batch.inputs, do_sample=False, max_new_tokens=6, return_dict_in_generate=True,
                             output_logits=True, pad_token_id=0)
    gens = vlm.generate_batch(batch, knockout=[], max_new_tokens=6, return_logits=True)
    for b, g in enumerate(gens):
        assert g.token_ids == out.sequences[b, batch.prompt_length:].tolist()
        assert torch.equal(g.logits, torch.stack(out.logits, 1)[b, : len(g.logits)])


def test_knockout_forward_equals_eager_4d_mask_oracle(models):
    vlm, _, eager, _ = models
    batch = vlm.prepare(_image(2), "describe the image")
    names = _names(batch.roles, batch.prompt_length)
    inputs = {k: v for k, v in batch.inputs.items() if k != "attention_mask"}
    for ko, pairs in [(vf.Knockout("image", "text"), [({"image"}, TEXT)]),
                      (vf.Knockout(["image", "system"], "query"), [({"image", "system"}, {"query"})])]:
        with torch.no_grad():
            want = eager(**inputs, attention_mask=_mask(names, pairs)).logits
        got = vlm.forward(batch, knockout=ko).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert (got - vlm.forward(batch).logits).abs().max() > 1e-3  # the knockout really bites


def test_layer_subset_knockouts_equal_per_layer_oracle(models):
    vlm, _, _, layered = models
    batch = vlm.prepare(_image(3), "how many objects are there ?")
    names = _names(batch.roles, batch.prompt_length)
    kos = [vf.Knockout("image", "query", [1, 2]), vf.Knockout("system", "assistant", [0, 3])]
    specs = [({"image"}, {"query"}, {1, 2}), ({"system"}, {"assistant"}, {0, 3})]
    LAYER_MASKS.update(_layer_masks(names, specs))
    inputs = {k: v for k, v in batch.inputs.items() if k != "attention_mask"}
    with torch.no_grad():
        want = layered(**inputs, attention_mask=_mask(names, [])).logits
    torch.testing.assert_close(vlm.forward(batch, knockout=kos).logits, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kos,specs", [
    ([vf.Knockout("image", "generated")], [({"image"}, {"generated"}, set(range(N_LAYERS)))]),
    ([vf.Knockout("image", "text", [0, 1]), vf.Knockout("image", "generated", [2, 3])],
     [({"image"}, TEXT, {0, 1}), ({"image"}, {"generated"}, {2, 3})]),
])
def test_cached_generation_equals_no_cache_oracle_loop(models, kos, specs):
    vlm, _, _, layered = models
    batch = vlm.prepare(_image(4), "describe the image")
    n_new = 6
    gen = vlm.generate_batch(batch, knockout=kos, max_new_tokens=n_new, return_logits=True)[0]
    seq = batch.inputs["input_ids"]
    pixel_values = batch.inputs["pixel_values"]
    for step in range(len(gen.logits)):
        names = _names(batch.roles, seq.shape[1])
        LAYER_MASKS.update(_layer_masks(names, specs))
        with torch.no_grad():
            logits = layered(input_ids=seq, pixel_values=pixel_values, attention_mask=_mask(names, []),
                             use_cache=False).logits[0, -1]
        torch.testing.assert_close(gen.logits[step], logits, atol=1e-5, rtol=1e-5)
        nxt = int(logits.argmax())
        if step < len(gen.token_ids):
            assert gen.token_ids[step] == nxt
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)


def test_ko_image_to_generated_spares_only_the_first_token(models):
    vlm, _, _, _ = models
    image = _image(5)
    plain = vlm.generate(image, max_new_tokens=4, return_logits=True)
    ko = vlm.generate(image, knockout=vf.Knockout("image", "generated"), max_new_tokens=4, return_logits=True)
    assert torch.equal(plain.logits[0], ko.logits[0])  # predicted by the last prompt position
    assert plain.token_ids[0] == ko.token_ids[0]
    assert (plain.logits[1] - ko.logits[1]).abs().max() > 1e-4  # same input token, image now invisible


def test_ko_image_to_text_leaves_image_states_and_changes_text_after_it(models):
    vlm, _, _, _ = models
    batch = vlm.prepare(_image(6), "describe the image")
    plain = vlm.forward(batch, output_hidden_states=True).output.hidden_states
    ko = vlm.forward(batch, knockout=vf.Knockout("image", "text"), output_hidden_states=True).output.hidden_states
    image = batch.roles.mask("image")[0]
    after = batch.roles.mask(["query", "assistant"])[0]
    before = batch.roles.mask(["bos", "system", "user"])[0]
    for layer in range(len(plain)):
        assert torch.equal(plain[layer][0, image], ko[layer][0, image])
        assert torch.equal(plain[layer][0, before], ko[layer][0, before])  # causal: never saw the image
    assert (plain[-1][0, after] - ko[-1][0, after]).abs().max() > 1e-3


def test_batch_with_per_row_knockouts_equals_single_runs(models):
    vlm, _, _, _ = models
    images = [_image(7), _image(8, 32, 32), _image(9, 50, 20)]
    questions = ["describe the image", "how many objects are there in this picture ?", "what is on the left ?"]
    per_row = [[vf.Knockout("image", "generated")],
               [vf.Knockout("image", "text", [0, 1]), vf.Knockout("query", "generated", [3])],
               []]
    record = vf.Record(rows=["last_prompt", "generated"])
    batched = vlm.generate(images, questions, knockout=per_row, record=record, max_new_tokens=5, return_logits=True)
    for i, g in enumerate(batched):
        single = vlm.generate(images[i], questions[i], knockout=per_row[i] or None, record=record,
                              max_new_tokens=5, return_logits=True)
        assert g.token_ids == single.token_ids and g.knockout == single.knockout
        torch.testing.assert_close(g.logits, single.logits, atol=1e-5, rtol=1e-5)
        assert torch.equal(g.roles.ids, single.roles.ids)
        assert torch.equal(g.record.row_positions, single.record.row_positions)
        torch.testing.assert_close(g.record.role_mass, single.record.role_mass, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g.record.image_map, single.record.image_map, atol=1e-5, rtol=1e-5)


def test_knockout_needs_the_vlmflow_attention(models):
    vlm, _, _, _ = models
    image = _image(10)
    with pytest.raises(UnsupportedAttentionError, match="static"):
        vlm.generate(image, knockout=vf.Knockout("image", "generated"), max_new_tokens=2,
                     cache_implementation="static")
    vlm.adapter.set_attention("eager")
    try:
        with pytest.raises(UnsupportedAttentionError, match="'eager'"):
            vlm.generate(image, knockout=vf.Knockout("image", "generated"), max_new_tokens=2)
    finally:
        vlm.adapter.set_attention("vlmflow")


def test_layer_out_of_range_at_use_time(models):
    vlm, _, _, _ = models
    with pytest.raises(LayerIndexError, match=r"layer 4 .*valid 0-3"):
        vlm.generate(_image(11), knockout=vf.Knockout("image", "generated", [2, 4]), max_new_tokens=2)
