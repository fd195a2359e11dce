"""Attention recording against eager ``output_attentions`` (the oracle), with and without a knockout, in a forward
and through cached generation; normalisation of rows and role masses; spec errors."""
import pytest
import torch

import vlmflow as vf
from tests.oracles import random_image as _image
from tests.oracles import role_names as _names
from tests.tiny import build
from vlmflow.errors import LayerIndexError, UnknownRoleError, VlmflowError
from vlmflow.roles import ROLES

TEXT = {"bos", "system", "user", "query", "assistant"}


@pytest.fixture(scope="module")
def models():
    model, processor = build("llava")
    vlm = vf.wrap(model, processor)
    eager, _ = build("llava")
    eager.set_attn_implementation({"text_config": "eager"})
    return vlm, eager


def _mask(names, src, tgt):
    T = len(names)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    rows = torch.tensor([n in tgt for n in names])
    cols = torch.tensor([n in src for n in names])
    allowed &= ~(rows[:, None] & cols[None, :])
    return torch.zeros(T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]


def _check_against(rec, attentions, names):
    """rec: AttentionRecord; attentions: eager tuple of (1, H, T, T) per layer; names: role name per position."""
    pos = rec.row_positions
    img = torch.tensor([i for i, n in enumerate(names) if n == "image"])
    assert torch.equal(rec.image_positions, img)
    for li, layer in enumerate(rec.layers):
        rows = attentions[layer][0][:, pos]  # (H, R, T)
        mean = rows.mean(0)  # (R, T)
        T = mean.shape[-1]
        torch.testing.assert_close(rec.attention[:, li, :T], mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(rec.image_map[:, li], rows[:, :, img].transpose(0, 1), atol=1e-6, rtol=0)
        for r_id, role in enumerate(ROLES):
            cols = torch.tensor([n == role for n in names] + [False] * (T - len(names)))
            torch.testing.assert_close(rec.role_mass[:, li, r_id], mean[:, cols].sum(-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("knockout", [None, vf.Knockout("image", "query")])
def test_forward_record_equals_eager_output_attentions(models, knockout):
    vlm, eager = models
    batch = vlm.prepare(_image(0), "describe the image")
    names = _names(batch.roles, batch.prompt_length)
    record = vf.Record(rows=["query", "last_prompt", "image"], heads="all", store_rows=True)
    rec = vlm.forward(batch, knockout=knockout, record=record).records[0]
    expected_rows = [i for i, n in enumerate(names) if n in ("query", "image")] + [len(names) - 1]
    assert rec.row_positions.tolist() == sorted(expected_rows)
    inputs = {k: v for k, v in batch.inputs.items() if k != "attention_mask"}
    src, tgt = ({"image"}, {"query"}) if knockout is not None else (set(), set())
    with torch.no_grad():
        out = eager(**inputs, attention_mask=_mask(names, src, tgt), output_attentions=True)
    _check_against(rec, out.attentions, names)


def test_generation_record_under_knockout_equals_eager_on_final_sequence(models):
    vlm, eager = models
    image = _image(1)
    record = vf.Record(rows="generated", layers=[1, 3], heads="all", store_rows=True)
    gen = vlm.generate(image, knockout=vf.Knockout("image", "generated", [0, 1, 2, 3]), record=record,
                       max_new_tokens=6)
    rec = gen.record
    P = gen.prompt_length
    fed = len(gen.token_ids) - (0 if gen.finished else 1)  # the last generated token is never fed back
    assert rec.layers == (1, 3)
    assert rec.row_positions.tolist() == list(range(P, P + fed))
    assert rec.row_token_ids.tolist() == gen.token_ids[:fed]
    seq = torch.tensor([gen.prompt_ids + gen.token_ids[:fed]])
    names = _names(gen.roles, seq.shape[1])
    batch = vlm.prepare(image)
    with torch.no_grad():
        out = eager(input_ids=seq, pixel_values=batch.inputs["pixel_values"],
                    attention_mask=_mask(names, {"image"}, {"generated"}), output_attentions=True, use_cache=False)
    _check_against(rec, out.attentions, names)
    assert rec.image_map.abs().max() == 0  # the knocked-out generated rows put no mass on the image


def test_rows_and_role_masses_sum_to_one_and_key_share_is_the_uniform_baseline(models):
    vlm, _ = models
    gens = vlm.generate([_image(2), _image(3, 32, 32)], ["describe the image", "how many objects are there ?"],
                        record=vf.Record(rows=["last_prompt", "generated"], store_rows=True), max_new_tokens=5)
    for g in gens:
        rec = g.record
        R, L = len(rec.row_positions), len(rec.layers)
        assert rec.role_mass.shape == (R, L, len(ROLES)) and rec.image_map.shape == (R, L, g.roles.count("image"))
        assert rec.row_positions[0] == g.prompt_length - 1  # the last prompt position predicts token 1
        torch.testing.assert_close(rec.role_mass.sum(-1), torch.ones(R, L), atol=1e-5, rtol=0)
        torch.testing.assert_close(rec.attention.sum(-1), torch.ones(R, L), atol=1e-5, rtol=0)
        torch.testing.assert_close(rec.key_share.sum(-1), torch.ones(R), atol=1e-6, rtol=0)
        assert (rec.role_mass[..., ROLES.index("pad")] == 0).all()
        # key_share: the row at position p sees p + 1 keys, of which count(role) belong to each prompt role
        p = int(rec.row_positions[-1])
        assert float(rec.key_share[-1, ROLES.index("image")]) == pytest.approx(g.roles.count("image") / (p + 1))
        # mass on a group is the sum of its roles
        torch.testing.assert_close(rec.mass("text"), sum(rec.mass(r) for r in sorted(TEXT)), atol=1e-6, rtol=0)


def test_head_mean_equals_mean_of_heads(models):
    vlm, _ = models
    batch = vlm.prepare(_image(4))
    mean = vlm.forward(batch, record=vf.Record(rows="query", heads="mean")).records[0]
    heads = vlm.forward(batch, record=vf.Record(rows="query", heads="all")).records[0]
    assert heads.image_map.ndim == 4 and mean.image_map.ndim == 3
    torch.testing.assert_close(heads.image_map.mean(2), mean.image_map, atol=1e-7, rtol=0)
    assert mean.attention is None  # full rows only on request


def test_record_spec_errors_name_the_culprit(models):
    vlm, _ = models
    with pytest.raises(UnknownRoleError, match="'generatd'"):
        vf.Record(rows="generatd")
    with pytest.raises(VlmflowError, match="'some'"):
        vf.Record(heads="some")
    with pytest.raises(LayerIndexError, match=r"layer 7 .*valid 0-3"):
        vlm.forward(vlm.prepare(_image(5)), record=vf.Record(layers=[0, 7]))
