"""Image Re-prompting on planted models: the answer turn runs the model's plant through the one attention function.

Oracles (tiny random LLaVA, 4 decoder layers, float32; the plant given to ``wrap`` as a planted model's folder would):

- K = 100% ("context"): every decoding step's logits of ``answer`` equal ONE forward of the bare weights over
  describe prompt + question + the answer's tokens, under the plant as an explicit ``vf.Knockout`` with the answer
  turn's roles (question template ``user``, question words ``query``, the answer ``generated``);
- a partial K with one image set for all layers (select="band") equals that forward with the other image tokens
  hidden from the question and answer rows by a 4D mask; a partial K with per-layer sets (select="attention",
  single-turn template) equals the plain single-turn prompt with, per layer, the other image tokens knocked out for
  the question's rows;
- each comparison fails when the plant is left out of the answer turn (the describe run's cache still planted);
- a plant that blinds the text to the image makes "query+topk" answer exactly as "query";
- per-layer roles (``compile_knockouts(layer_roles=)``) give, in each layer, the mask of a plain compile with that
  layer's roles.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.oracles import random_pil_image as _image
from tests.tiny import build
from vlmflow import reprompt as R
from vlmflow.attention import ForwardState, _causal, active, compile_knockouts
from vlmflow.errors import VlmflowError
from vlmflow.knockout import Knockout
from vlmflow.model import wrap
from vlmflow.plant import Plant
from vlmflow.roles import ASSISTANT, BOS, IMAGE, QUERY, USER, TokenRoles

QUESTION = "is there a red circle ?"
PLANTS = {
    "compress": Knockout("image", "generated"),  # toy:compress's plant: the answer tokens never read the image
    "layered": Knockout("image", ("text", "generated"), layers=(0, 1)),  # like toy:window: blind in layers 0-1
    "text_blind": Knockout("image", ("text", "generated")),  # no text or answer token reads the image anywhere
}


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    model, processor = build("llava")
    bare = wrap(model, processor)
    planted = {name: wrap(model, processor, plant=Plant((ko,), name)) for name, ko in PLANTS.items()}
    return bare, planted


@pytest.fixture(scope="module")
def runs(models):
    _, planted = models
    return {name: R.describe(vlm, _image(), max_new_tokens=3) for name, vlm in planted.items()}


def _unplanted_answer(run, bare, ctx, question=QUESTION, max_new_tokens=3):
    """``answer`` on the same planted describe cache with the plant left out of the answer turn (the behaviour this
    module replaces): what the comparisons must tell apart."""
    ctx = dataclasses.replace(ctx, run=dataclasses.replace(run, vlm=bare))
    return R.answer(ctx, question, max_new_tokens=max_new_tokens)


def _oracle(run, bare, a: R.Answer, plant: Knockout, mask_hidden=()):
    """Logits of one forward of the bare weights over prompt + question + the answer's fed tokens, under ``plant``
    with the answer turn's roles; ``mask_hidden``: prompt positions hidden from every row past the prompt."""
    ids, q_roles = R.question_tokens(run.vlm, question=QUESTION)
    fed = a.token_ids[: a.token_logits.shape[0] - 1]  # the tokens fed back before each step
    P, n = run.prompt_length, len(ids)
    inp = dict(run.batch.inputs)
    inp["input_ids"] = torch.cat([inp["input_ids"], torch.tensor([ids + fed])], 1)
    T = inp["input_ids"].shape[1]
    inp["attention_mask"] = torch.ones(1, T, dtype=torch.long)
    if mask_hidden:
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        mask[P:, list(mask_hidden)] = False
        inp["attention_mask"] = mask[None, None]
    roles = TokenRoles(torch.cat([run.batch.roles.ids, torch.tensor([q_roles])], 1), P + n)
    with torch.no_grad(), active(roles, [plant], n_layers=run.num_layers):
        logits = bare.model(**inp).logits[0].float()
    return logits[P:P + n], logits[P + n - 1:]  # over the question; at each decoding step


def test_question_roles_are_template_query_template(models):
    vlm, _ = models
    ids, roles = R.question_tokens(vlm, QUESTION)
    text = R.template_for(vlm).format(question=QUESTION)
    assert ids == vlm.tokenizer(text, add_special_tokens=False)["input_ids"] and len(ids) == len(roles)
    assert roles == sorted(roles) and {USER, QUERY, ASSISTANT} == set(roles)  # user tag, the words, assistant tag
    assert vlm.tokenizer.decode([i for i, r in zip(ids, roles) if r == QUERY]).strip() == QUESTION
    with pytest.raises(R.RepromptError, match="exactly once"):
        R.question_tokens(vlm, QUESTION, template="USER: no placeholder")


@pytest.mark.parametrize("name", ["compress", "layered"])
def test_full_context_answer_equals_one_planted_forward(models, runs, name):
    bare, _ = models
    run = runs[name]
    ctx = R.compress(run, "context")
    a = R.answer(ctx, QUESTION, max_new_tokens=3)
    assert a.token_logits.shape[0] >= 2  # at least one generated token fed back: the answer rows are checked too
    over_question, per_step = _oracle(run, bare, a, PLANTS[name])
    assert torch.allclose(a.step_logits, over_question, atol=1e-5)
    assert torch.allclose(a.token_logits, per_step, atol=1e-5)
    assert torch.equal(a.first_logits, a.token_logits[0])
    # the plant bites: left out of the answer turn, the same cache answers otherwise
    loose = _unplanted_answer(run, bare, ctx)
    n = min(loose.token_logits.shape[0], per_step.shape[0])
    assert not torch.allclose(loose.token_logits[:n], per_step[:n], atol=1e-3)
    if name == "layered":  # the question's own rows are blinded in layers 0-1: the first step already differs
        assert not torch.allclose(loose.first_logits, per_step[0], atol=1e-3)


@pytest.mark.parametrize("name", ["compress", "layered"])
def test_band_topk_answer_equals_a_masked_planted_forward(models, runs, name):
    bare, _ = models
    run = runs[name]
    ctx = R.compress(run, "query+topk", k_percent=25, select="band")
    assert all(torch.equal(ctx.kept[0], ctx.kept[layer]) for layer in range(run.num_layers))  # one set for all
    hidden = sorted(set(run.image_positions.tolist()) - set(ctx.kept[0].tolist()))
    assert len(hidden) == run.n_image - R.n_keep(25, run.n_image)
    a = R.answer(ctx, QUESTION, max_new_tokens=3)
    over_question, per_step = _oracle(run, bare, a, PLANTS[name], mask_hidden=hidden)
    assert torch.allclose(a.step_logits, over_question, atol=1e-5)
    assert torch.allclose(a.token_logits, per_step, atol=1e-5)
    loose = _unplanted_answer(run, bare, ctx)
    n = min(loose.token_logits.shape[0], per_step.shape[0])
    assert not torch.allclose(loose.token_logits[:n], per_step[:n], atol=1e-3)


def test_per_layer_topk_single_turn_equals_the_planted_plain_prompt(models, runs):
    """Per-layer image sets (select="attention"), single-turn template: the plain single-turn prompt (bare weights,
    the plant explicit) with, in each layer, the image tokens that layer did not keep knocked out for the question's
    rows (query + assistant in that prompt)."""
    bare, _ = models
    run = runs["layered"]
    ctx = R.compress(run, "query+topk", k_percent=25, select="attention", turn="single")
    image = set(run.image_positions.tolist())
    kept = [sorted(image & set(ctx.kept[layer].tolist())) for layer in range(run.num_layers)]
    assert len({tuple(k) for k in kept}) > 1  # the layers keep different image tokens
    a = R.answer(ctx, QUESTION, max_new_tokens=1)
    batch = bare.prepare(run.image, QUESTION)
    q0 = int(batch.roles.positions("query", 0)[0])
    hide = [Knockout("image", ("query", "assistant"), layers=(layer,), source_positions=sorted(image - set(k)))
            for layer, k in enumerate(kept)]
    oracle = bare.forward(batch, knockout=[PLANTS["layered"], *hide]).logits[0, q0:].float()
    assert torch.allclose(a.step_logits, oracle, atol=1e-5)
    loose = _unplanted_answer(run, bare, ctx, max_new_tokens=1)
    assert not torch.allclose(loose.step_logits, oracle, atol=1e-3)


def test_a_plant_that_blinds_the_text_hides_the_kept_image_tokens(models, runs):
    """``image:text+generated@all``: the question's rows cannot read the kept image tokens, so query + top-K answers
    exactly as the query alone; without the plant in the answer turn the kept image tokens are read."""
    bare, _ = models
    run = runs["text_blind"]
    query = R.compress(run, "query")
    topk = R.compress(run, "query+topk", k_percent=25, select="attention")
    assert topk.n_tokens > query.n_tokens
    a, b = (R.answer(ctx, QUESTION, max_new_tokens=3) for ctx in (query, topk))
    assert a.token_ids == b.token_ids
    assert torch.allclose(a.token_logits, b.token_logits, atol=1e-5)
    loose = _unplanted_answer(run, bare, topk)
    assert not torch.allclose(loose.first_logits, a.first_logits, atol=1e-3)


def test_per_layer_roles_give_each_layer_its_own_mask():
    """A cache whose layers hold differently-ordered prompt positions: the per-layer plan's mask for the continuation
    rows equals, in every layer, a plain compile with that layer's roles; position and frame specs are refused."""
    C, q = 5, [USER, QUERY, ASSISTANT]
    prompts = [[BOS, USER, IMAGE, IMAGE, QUERY], [BOS, IMAGE, USER, IMAGE, QUERY], [BOS, USER, QUERY, IMAGE, IMAGE]]
    layers = [TokenRoles(torch.tensor([p + q]), C + len(q)) for p in prompts]
    kos = [Knockout("image", ("text", "generated"), layers=(0, 1)), Knockout("query", "generated"),
           Knockout("generated", "generated", layers=(2,))]
    plan = compile_knockouts(kos, 1, 3, layers[0], layer_roles=layers)
    K = C + len(q) + 2  # two generated keys after the question
    Q = K - C  # the rows of the answer turn: the question and the generated tokens
    query, key = torch.zeros(1, 2, Q, 4), torch.zeros(1, 2, K, 4)

    def mask(state, layer):
        out, changed = state.mask_for(layer, None, query, key)
        return out if changed else _causal(Q, K, "cpu")

    masks = []
    for layer in range(3):
        got = mask(ForwardState(layers[0], plan, None), layer)
        want = mask(ForwardState(layers[layer], compile_knockouts(kos, 1, 3, layers[layer]), None), layer)
        assert torch.equal(got, want), layer
        masks.append(got)
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])
    assert not bool(masks[2][0, 0, -1, -2])  # generated:generated in layer 2: the table's generated column
    with pytest.raises(VlmflowError, match="one TokenRoles per decoder layer"):
        compile_knockouts(kos, 1, 4, layers[0], layer_roles=layers)
    with pytest.raises(VlmflowError, match=r"image\{1\}:generated@all names source positions or frames"):
        compile_knockouts([Knockout("image", "generated", source_frames=[1])], 1, 3, layers[0], layer_roles=layers)


def test_describe_and_full_answer_of_a_planted_model_run_its_plant(models, runs):
    """``describe`` and the "full image" baseline go through ``VLM.generate``/``prefill``: the plant applies."""
    bare, planted = models
    vlm, ko = planted["compress"], PLANTS["compress"]
    run = runs["compress"]
    ref = bare.generate(_image(), "describe the image", knockout=ko, max_new_tokens=3)
    assert run.generation.token_ids == ref.token_ids
    pre = bare.prefill(run.batch, knockout=ko)
    assert all(torch.equal(k, layer.keys) for k, layer in zip(run.keys, pre.cache.layers))
    full = R.full_answer(vlm, _image(), QUESTION, max_new_tokens=2)
    oracle = bare.generate(_image(), QUESTION, knockout=ko, max_new_tokens=2, return_logits=True)
    assert torch.equal(full.first_logits, oracle.logits[0].float())


def test_without_a_plant_the_answer_turn_is_bit_identical_to_plain_attention(models, monkeypatch):
    """The answer turn's ``VLM.active`` block adds nothing to a model without a plant: the same bits as decoding
    with no attention state at all (transformers' sdpa, as before re-prompting ran the plant)."""
    import contextlib

    from vlmflow.model import VLM

    bare, _ = models
    ctx = R.compress(R.describe(bare, _image(seed=3), max_new_tokens=2), "query+topk", k_percent=25)
    a = R.answer(ctx, QUESTION, max_new_tokens=3)
    monkeypatch.setattr(VLM, "active", lambda self, *args, **kwargs: contextlib.nullcontext())
    b = R.answer(ctx, QUESTION, max_new_tokens=3)
    assert a.token_ids == b.token_ids and torch.equal(a.token_logits, b.token_logits)
    assert torch.equal(a.step_logits, b.step_logits)
