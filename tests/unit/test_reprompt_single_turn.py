"""Single-turn Image Re-prompting (``vlmflow.reprompt``, ``turn="single"``) on a tiny random LLaVA, against plain
forwards of the ordinary single-turn prompt ``<system> USER: <image>\\n{question} ASSISTANT:`` (no cache surgery):

- K = 100% (context "context") gives the same logits over the question's tokens as the plain prompt;
- a partial K with per-layer sets (select="attention") equals the plain prompt with, in each layer, the image tokens
  that layer did not keep knocked out for the question's rows (query + assistant) only: the kept image tokens' KV
  were computed with the whole image, exactly as in the plain prompt's prefix;
- K = 0 equals the plain prompt with the whole image hidden from the question's rows;
- the single-turn context never holds the describe run's own words or assistant tag, and the variant names parse.
"""
from __future__ import annotations

import pytest
import torch

from tests.oracles import random_pil_image as _image
from tests.tiny import build
from vlmflow import reprompt as R
from vlmflow.knockout import Knockout
from vlmflow.model import wrap

QUESTION = "is there a red circle ?"
TAIL = ("query", "assistant")  # the roles of the question's rows in the plain single-turn prompt


@pytest.fixture(scope="module")
def run():
    torch.set_num_threads(1)
    vlm = wrap(*build("llava"))
    return R.describe(vlm, _image(), max_new_tokens=4)


def _plain(run, knockout=None):
    """Logits over the question's tokens of the plain single-turn prompt (same image), and its query start."""
    batch = run.vlm.prepare(run.image, QUESTION)
    q0 = int(batch.roles.positions("query", 0)[0])
    return run.vlm.forward(batch, knockout=knockout).logits[0, q0:].float(), q0


def test_full_single_turn_context_equals_the_plain_prompt(run):
    ctx = R.compress(run, "context", turn="single")
    assert ctx.n_tokens == run.query_start  # BOS + system + user tag + every image token, nothing of the query
    a = R.answer(ctx, QUESTION, max_new_tokens=2)
    oracle, q0 = _plain(run)
    assert q0 == run.query_start
    assert a.step_logits.shape == oracle.shape
    assert torch.allclose(a.step_logits, oracle, atol=1e-5)
    # the two-turn template over the same image is a different input: its logits differ
    two = R.answer(R.compress(run, "context"), QUESTION, max_new_tokens=1)
    assert not torch.allclose(two.first_logits, a.first_logits, atol=1e-3)


def test_partial_k_equals_the_plain_prompt_with_other_image_tokens_knocked_out(run):
    ctx = R.compress(run, "query+topk", k_percent=25, select="attention", turn="single")
    image = set(run.image_positions.tolist())
    kept = [sorted(set(ctx.kept[layer].tolist()) & image) for layer in range(run.num_layers)]
    assert all(len(k) == R.n_keep(25, run.n_image) for k in kept)
    assert len({tuple(k) for k in kept}) > 1, "per-layer sets should differ on this model (else the test is weak)"
    hidden = [sorted(image - set(k)) for k in kept]
    kos = [Knockout("image", TAIL, layers=[layer], source_positions=hidden[layer]) for layer in range(run.num_layers)]
    a = R.answer(ctx, QUESTION, max_new_tokens=1)
    oracle, _ = _plain(run, kos)
    assert torch.allclose(a.step_logits, oracle, atol=1e-5)
    # the same sets applied in the wrong layers give other logits: the per-layer choice is what is tested
    shifted = [Knockout("image", TAIL, layers=[layer], source_positions=hidden[(layer + 1) % run.num_layers])
               for layer in range(run.num_layers)]
    assert not torch.allclose(a.step_logits, _plain(run, shifted)[0], atol=1e-4)


def test_k0_single_turn_equals_the_image_hidden_from_the_question(run):
    ctx = R.compress(run, "query", turn="single")
    assert set(ctx.kept[0].tolist()).isdisjoint(run.image_positions.tolist())
    assert max(ctx.kept[0].tolist()) < run.query_start
    a = R.answer(ctx, QUESTION, max_new_tokens=1)
    oracle, _ = _plain(run, Knockout("image", TAIL))
    assert torch.allclose(a.step_logits, oracle, atol=1e-5)


def test_single_turn_variants_parse_and_validate():
    v = R.Variant.parse("query+topk@5/single")
    assert v == R.Variant("query+topk", 5.0, "single") and v.name == "query+topk@5%/single"
    assert R.Variant.parse(v.name) == v
    with pytest.raises(R.RepromptError, match="only compressed contexts"):
        R.Variant.parse("full/single")
    with pytest.raises(R.RepromptError, match="unknown turn"):
        R.Variant.parse("query/three")
    names = [x.name for x in R.table1_variants((5,), turns=R.TURNS)]
    assert names.count("full") == 1 and "query+topk@5%/single" in names and "query+topk@5%" in names


def test_template_override_is_refused_for_single_turn(run):
    with pytest.raises(R.RepromptError, match="turn='two'"):
        R.answer(R.compress(run, "query", turn="single"), QUESTION, template=" {question}")
    with pytest.raises(R.RepromptError, match="unknown turn"):
        R.compress(run, "query", turn="both")
