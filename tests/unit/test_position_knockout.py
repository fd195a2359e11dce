"""Position-level knockouts (``Knockout(..., source_positions=...)``) against independent oracles.

Oracle: the same weights under an eager attention registered by this test that reads, per layer index, a 4D additive
mask built here by hand from the prompt's role names and the chosen positions (causal + blocked (target row, source
column) pairs). Also: the empty set is bit-identical to no knockout, the full set to the role-only knockout, per-row
different sets in one left-padded batch equal single runs, and cached decoding equals the no-cache oracle loop."""
import numpy as np
import pytest
import torch

import vlmflow as vf
from tests.oracles import LAYER_MASKS, layer_mask_attention
from tests.oracles import random_image as _image
from tests.oracles import role_names as _names
from tests.tiny import build
from vlmflow.knockout import PositionError

TEXT = {"bos", "system", "user", "query", "assistant"}
N_LAYERS = 4


@pytest.fixture(scope="module")
def models():
    from transformers import AttentionInterface

    AttentionInterface.register("test_position_oracle", layer_mask_attention)
    vlm = vf.wrap(*build("llava"))
    layered, _ = build("llava")
    layered.set_attn_implementation({"text_config": "test_position_oracle"})
    return vlm, layered


def _mask(names, blocked_cols, tgt):
    """(1, 1, T, T) additive mask: causal, and rows whose role is in ``tgt`` may not read columns ``blocked_cols``."""
    T = len(names)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(T):
        if names[i] in tgt:
            for j in blocked_cols:
                allowed[i, j] = False if j <= i else allowed[i, j]
    return torch.zeros(T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]


# ---- specs --------------------------------------------------------------------------------------------------------
def test_position_spec_ids_round_trip_and_stay_distinct():
    ko = vf.Knockout("image", "generated", [0, 1], source_positions=[9, 5, 6, 7, 8, 12, 5])
    assert ko.source_positions == (5, 6, 7, 8, 9, 12)
    assert ko.spec_id == "image[5-9,12]:generated@0-1"
    assert vf.Knockout.parse(ko.spec_id) == ko
    mask = np.zeros(20, dtype=bool)
    mask[[5, 6, 7, 8, 9, 12]] = True
    assert vf.Knockout("image", "generated", [0, 1], source_positions=mask) == ko
    assert vf.Knockout("image", "generated", [0, 1], source_positions=torch.tensor(mask)) == ko
    empty = vf.Knockout("image", "generated", source_positions=[])
    assert empty.spec_id == "image[none]:generated@all" and vf.Knockout.parse(empty.spec_id) == empty
    role_only = vf.Knockout("image", "generated")
    assert len({role_only.spec_id, empty.spec_id, ko.spec_id}) == 3
    assert role_only.source_positions is None and vf.Knockout.parse("image:generated").source_positions is None


def test_position_errors_name_the_culprit(models):
    vlm, _ = models
    with pytest.raises(PositionError, match="-3"):
        vf.Knockout("image", "text", source_positions=[-3])
    with pytest.raises(PositionError, match=r"\[x\]"):
        vf.Knockout.parse("image[x]:text")
    batch = vlm.prepare(_image(0), "describe the image")
    P = batch.prompt_length
    with pytest.raises(PositionError, match=rf"image\[{P + 5}\]:text@all.*position {P + 5} is past the {P}-token"):
        vlm.forward(batch, knockout=vf.Knockout("image", "text", source_positions=[P + 5]))


# ---- against oracles ------------------------------------------------------------------------------------------------
def test_position_knockout_forward_equals_per_layer_4d_mask_oracle(models):
    vlm, layered = models
    batch = vlm.prepare(_image(2), "describe the image")
    names = _names(batch.roles, batch.prompt_length)
    image = [i for i, n in enumerate(names) if n == "image"]
    hide_a, hide_b = image[::3], image[1:6]
    # positions outside the source role are ignored: the query position named here is never blocked
    query = names.index("query")
    kos = [vf.Knockout("image", "text", [1, 2], source_positions=hide_a + [query]),
           vf.Knockout("image", "text", [2, 3], source_positions=hide_b)]
    for layer in range(N_LAYERS):
        cols = set(hide_a if layer in (1, 2) else []) | set(hide_b if layer in (2, 3) else [])
        LAYER_MASKS[layer] = _mask(names, sorted(cols), TEXT)
    inputs = {k: v for k, v in batch.inputs.items() if k != "attention_mask"}
    with torch.no_grad():
        want = layered(**inputs).logits
    got = vlm.forward(batch, knockout=kos).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    role_ko = vlm.forward(batch, knockout=[vf.Knockout("image", "text", [1, 2, 3])]).logits
    assert (got - role_ko).abs().max() > 1e-3 and (got - vlm.forward(batch).logits).abs().max() > 1e-3


def test_empty_and_full_position_sets(models):
    vlm, _ = models
    batch = vlm.prepare(_image(3), "what is in this picture ?")
    image = batch.roles.positions("image", 0).tolist()
    plain = vlm.forward(batch).logits
    assert torch.equal(vlm.forward(batch, knockout=vf.Knockout("image", "text", source_positions=[])).logits, plain)
    full = vlm.forward(batch, knockout=vf.Knockout("image", "text", source_positions=image)).logits
    assert torch.equal(full, vlm.forward(batch, knockout=vf.Knockout("image", "text")).logits)
    assert not torch.equal(full, plain)


def test_cached_generation_with_positions_equals_no_cache_oracle_loop(models):
    vlm, layered = models
    batch = vlm.prepare(_image(4), "describe the image")
    image = batch.roles.positions("image", 0).tolist()
    hidden = image[: len(image) // 2]
    ko = vf.Knockout("image", ("query", "generated"), [0, 3], source_positions=hidden)
    gen = vlm.generate_batch(batch, knockout=ko, max_new_tokens=5, return_logits=True)[0]
    seq = batch.inputs["input_ids"]
    for step in range(len(gen.logits)):
        names = _names(batch.roles, seq.shape[1])
        for layer in range(N_LAYERS):
            LAYER_MASKS[layer] = _mask(names, hidden if layer in (0, 3) else [], {"query", "generated"})
        with torch.no_grad():
            logits = layered(input_ids=seq, pixel_values=batch.inputs["pixel_values"], use_cache=False).logits[0, -1]
        torch.testing.assert_close(gen.logits[step], logits, atol=1e-5, rtol=1e-5)
        nxt = int(logits.argmax())
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)


def test_batch_with_per_row_position_sets_equals_single_runs(models):
    vlm, _ = models
    images = [_image(7), _image(8, 32, 32), _image(9, 50, 20)]
    questions = ["describe the image", "how many objects are there in this picture ?", "what is on the left ?"]
    singles = [vlm.prepare(im, q) for im, q in zip(images, questions)]
    img_pos = [b.roles.positions("image", 0).tolist() for b in singles]
    per_row = [[vf.Knockout("image", ("text", "generated"), source_positions=img_pos[0][:3])],
               [vf.Knockout("image", "generated", [1, 2], source_positions=img_pos[1][5:]),
                vf.Knockout("image", "text", [0], source_positions=img_pos[1][::2])],
               [vf.Knockout("image", "text", source_positions=img_pos[2][-4:]), vf.Knockout("query", "generated")]]
    batched = vlm.generate(images, questions, knockout=per_row, max_new_tokens=5, return_logits=True)
    lengths = {b.prompt_length for b in singles}
    assert len(lengths) > 1, "prompts of equal length: left padding is not exercised"
    for i, g in enumerate(batched):
        single = vlm.generate(images[i], questions[i], knockout=per_row[i], max_new_tokens=5, return_logits=True)
        assert g.token_ids == single.token_ids and g.knockout == single.knockout
        torch.testing.assert_close(g.logits, single.logits, atol=1e-5, rtol=1e-5)
        plain = vlm.generate(images[i], questions[i], max_new_tokens=5, return_logits=True)
        assert (single.logits[1:] - plain.logits[1:len(single.logits)]).abs().max() > 1e-4  # the knockout bites
