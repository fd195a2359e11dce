"""The model mechanics behind ``VLM`` and the ``Adapter`` contract, on the tiny model of every architecture:

- ``Adapter.followup_turn``: the text of a second user turn equals what the processor's own chat template renders
  for [user(image, describe), assistant(""), user(question)] after the single-turn prompt (chat-ML templates), and
  for the llava_v1 template uses the first turn's own user and assistant tags;
- ``VLM.prefill``: its rotary positions equal the model's own ``get_rope_index`` (M-RoPE) or ``0..P-1``; its
  ``next_position`` is ``P + rope_deltas``; its last logits and image hidden-state norms equal a plain forward;
  continuing its cache with ``Adapter.text_position_ids`` gives the logits of one plain forward over prompt + tokens.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny import build
from vlmflow.model import wrap

ARCHS = ("llava", "internvl", "qwen2_vl", "qwen2_5_vl")
DESCRIBE = "describe the image"
QUESTION = "how many objects ?"


def _image(size):
    return Image.fromarray((np.random.default_rng(3).random((size, size, 3)) * 255).astype("uint8"))


@pytest.fixture(scope="module", params=ARCHS)
def vlm(request):
    torch.set_num_threads(1)
    arch = request.param
    model, processor = build(arch, chat_template=True) if arch != "llava" else build(arch)
    return wrap(model, processor)


def _size(vlm):
    return 56 if vlm.adapter.rope_axes > 1 else 32


def test_followup_turn_is_the_templates_next_user_turn(vlm):
    adapter = vlm.adapter
    follow = adapter.followup_turn(QUESTION)
    if adapter.name == "llava":  # no chat template on the processor: the llava_v1 tags of the first turn
        tags = dict((role, text) for role, text in adapter.segments(DESCRIBE) if role in ("user", "assistant"))
        assert follow == tags["user"] + QUESTION + tags["assistant"]
        return
    image = {"type": "image"}
    two = [{"role": "user", "content": [image, {"type": "text", "text": DESCRIBE}]},
           {"role": "assistant", "content": [{"type": "text", "text": ""}]},
           {"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    rendered = vlm.processor.apply_chat_template(two, add_generation_prompt=True, tokenize=False)
    assert adapter.prompt(DESCRIBE) + follow == rendered
    tok = vlm.tokenizer
    ours = tok(adapter.prompt(DESCRIBE) + follow, add_special_tokens=False)["input_ids"]
    assert ours == tok(rendered, add_special_tokens=False)["input_ids"]


def _plain(vlm, batch, extra: list[int], hidden=False):
    """One ordinary forward over the prompt (+ ``extra`` text tokens appended), no cache surgery."""
    inp = dict(batch.inputs)
    n = len(extra)
    inp["input_ids"] = torch.cat([inp["input_ids"], torch.tensor([extra], dtype=torch.long)], 1)
    inp["attention_mask"] = torch.ones_like(inp["input_ids"])
    if "mm_token_type_ids" in inp:
        tt = inp["mm_token_type_ids"]
        inp["mm_token_type_ids"] = torch.cat([tt, torch.zeros(1, n, dtype=tt.dtype)], 1)
    with torch.no_grad():
        return vlm.model(**inp, output_hidden_states=hidden)


def test_prefill_positions_are_the_models_own(vlm):
    batch = vlm.prepare(_image(_size(vlm)), DESCRIBE)
    pre = vlm.prefill(batch)
    P = batch.prompt_length
    if vlm.adapter.rope_axes > 1:
        inner = vlm.model.model
        own, deltas = inner.get_rope_index(batch.inputs["input_ids"], batch.inputs["mm_token_type_ids"],
                                           image_grid_thw=batch.inputs["image_grid_thw"],
                                           attention_mask=batch.inputs["attention_mask"])
        assert pre.positions.shape == (3, 1, P) and torch.equal(pre.positions, own)
        assert pre.next_position == P + int(deltas.reshape(-1)[0]) != P
    else:
        assert torch.equal(pre.positions, torch.arange(P)[None])
        assert pre.next_position == P


def test_prefill_then_continue_equals_one_plain_forward(vlm):
    batch = vlm.prepare(_image(_size(vlm)), DESCRIBE)
    pre = vlm.prefill(batch, hidden_norms=True)
    P = batch.prompt_length
    extra = vlm.tokenizer(vlm.adapter.followup_turn(QUESTION), add_special_tokens=False)["input_ids"]
    plain = _plain(vlm, batch, extra, hidden=True)
    logits = plain.logits[0].float()
    assert torch.allclose(pre.last_logits, logits[P - 1], atol=1e-5)
    img = batch.roles.positions("image", 0)
    norms = torch.stack([plain.hidden_states[layer][0, img].float().norm(dim=-1) for layer in range(vlm.num_layers)])
    assert pre.image_norms.shape == (vlm.num_layers, len(img)) and torch.allclose(pre.image_norms, norms, atol=1e-4)
    n = len(extra)
    positions = vlm.adapter.text_position_ids(pre.next_position, n)
    with torch.no_grad():
        cont = vlm.model(input_ids=torch.tensor([extra]), position_ids=positions, cache=pre.cache, use_cache=True,
                         attention_mask=torch.ones(1, P + n, dtype=torch.long)).logits[0].float()
    assert torch.allclose(cont, logits[P:], atol=1e-4)
    # and the positions matter: restarting them at P on every axis differs whenever the prompt's delta is not 0
    if pre.next_position != P:
        wrong = vlm.adapter.text_position_ids(P, n)
        pre2 = vlm.prefill(batch)
        with torch.no_grad():
            off = vlm.model(input_ids=torch.tensor([extra]), position_ids=wrong, cache=pre2.cache, use_cache=True,
                            attention_mask=torch.ones(1, P + n, dtype=torch.long)).logits[0].float()
        assert not torch.allclose(off, logits[P:], atol=1e-3)


def test_prefill_refuses_a_padded_batch(vlm):
    from vlmflow.errors import VlmflowError

    batch = vlm.prepare([_image(_size(vlm)), _image(_size(vlm))], [DESCRIBE, QUESTION + " " + DESCRIBE])
    with pytest.raises(VlmflowError, match="one unpadded row"):
        vlm.prefill(batch)


def test_eos_ids_follow_the_generation_config(vlm):
    gen = vlm.model.generation_config
    old = gen.eos_token_id
    try:
        gen.eos_token_id = [5, 7]
        assert vlm.eos_ids == {5, 7}
        gen.eos_token_id = 9
        assert vlm.eos_ids == {9}
        gen.eos_token_id = None
        assert vlm.eos_ids == frozenset()
    finally:
        gen.eos_token_id = old


def test_generation_heatmap_paints_the_predicting_rows_attention_over_the_adapters_geometry(vlm):
    """``gen.heatmap(token, layer)`` with the default Record equals the adapter geometry's own painting of the
    recorded image attention of the row that outputs the token (token 0: the last prompt position)."""
    import vlmflow as vf
    from vlmflow.heatmap import HeatmapError

    image = _image(_size(vlm))
    gen = vlm.generate(image, DESCRIBE, record=vf.Record(), max_new_tokens=3)
    geo = vlm.adapter.geometry(image.size, vlm.prepare(image, DESCRIBE).inputs, 0)
    rec = gen.record
    positions = rec.row_positions.tolist()
    assert gen.prompt_length - 1 in positions  # the default Record holds the row that predicts token 0
    tiles = [i for i, b in enumerate(geo.blocks) if b.name != "thumbnail"]
    for token in range(len(gen.token_ids) + (0 if gen.finished else -1) + 1):
        values = rec.image_map[positions.index(gen.prompt_length - 1 + token)].float().numpy()  # [L, N]
        for layer in (0, vlm.num_layers - 1):
            heat = gen.heatmap(token, layer)
            assert heat.shape == (image.size[1], image.size[0])
            for b in tiles:  # every tile painted where it covers the image (one tile: the whole map)
                own = geo.heatmap(values[layer], block=b)
                inside = ~np.isnan(own)
                assert inside.any() and np.array_equal(heat[inside], own[inside])
            assert np.array_equal(gen.heatmap(token, layer, block=0), geo.heatmap(values[layer], block=0),
                                  equal_nan=True)
    plain = vlm.generate(image, DESCRIBE, max_new_tokens=1)
    with pytest.raises(HeatmapError, match="no attention record"):
        plain.heatmap(0, 0)
    with pytest.raises(HeatmapError, match="was not recorded"):
        gen.heatmap(50, 0)
