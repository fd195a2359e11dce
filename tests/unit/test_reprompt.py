"""Image Re-prompting (vlmflow.reprompt) on tiny random models, against independent oracles:

- K = 100% with every text position: the first answer step's logits equal a plain forward over the describe prompt +
  the question continuation (one sequence, no cache surgery);
- K = 0 (query only) equals that plain forward with the continuation cut off from the image by a knockout
  (image -> generated, all layers: the continuation positions are `generated` for TokenRoles), which also checks that
  the question's position ids continue from the full prompt length although the cache is shorter;
- query + top-K with one token set for all layers (select="band") equals the plain forward with a hand-made 4D mask
  that hides the other image tokens from the continuation rows;
- the same two cache oracles on Qwen2-VL (M-RoPE positions continue from P + rope_delta) and InternVL;
- ranking, K rounding, the toy exact reader against scene ground truth, and the score table's answer distribution.
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


@pytest.fixture(scope="module")
def llava_run():
    torch.set_num_threads(1)
    model, processor = build("llava")
    vlm = wrap(model, processor)
    return R.describe(vlm, _image(), max_new_tokens=4)


def _concat_inputs(run, question=QUESTION):
    """The describe prompt + the question continuation as one ordinary model input (with the image)."""
    ids = R.question_ids(run.vlm, question)
    inp = dict(run.batch.inputs)
    inp["input_ids"] = torch.cat([inp["input_ids"], torch.tensor([ids])], 1)
    inp["attention_mask"] = torch.ones_like(inp["input_ids"])
    if "mm_token_type_ids" in inp:
        inp["mm_token_type_ids"] = torch.cat([inp["mm_token_type_ids"], torch.zeros(1, len(ids), dtype=torch.long)
                                              .to(inp["mm_token_type_ids"].dtype)], 1)
    return inp, len(ids)


def _plain_logits(run, question=QUESTION, knockout=None, mask4d=None):
    from vlmflow.attention import active

    inp, n = _concat_inputs(run, question)
    inner = getattr(run.vlm.model, "model", None)
    if inner is not None and hasattr(inner, "rope_deltas"):
        inner.rope_deltas = None
    if mask4d is not None:
        inp["attention_mask"] = mask4d
    with torch.no_grad(), active(run.batch.roles, knockout, None, n_layers=run.num_layers):
        logits = run.vlm.model(**inp).logits[0].float()
    return logits[run.prompt_length:]


def test_full_context_equals_one_plain_forward(llava_run):
    ctx = R.compress(llava_run, "context")
    assert ctx.n_tokens == llava_run.prompt_length
    a = R.answer(ctx, QUESTION, max_new_tokens=2)
    assert torch.allclose(a.step_logits, _plain_logits(llava_run), atol=1e-5)


def test_query_only_equals_knockout_of_the_image_and_keeps_positions(llava_run):
    ctx = R.compress(llava_run, "query+topk", k_percent=0)
    q = R.compress(llava_run, "query")
    assert torch.equal(ctx.kept, q.kept)  # K = 0 is query-only
    assert ctx.n_tokens == llava_run.prompt_length - llava_run.n_image
    a = R.answer(ctx, QUESTION, max_new_tokens=1)
    oracle = _plain_logits(llava_run, knockout=Knockout(source="image", target="generated"))
    assert torch.allclose(a.step_logits, oracle, atol=1e-5)
    # the position ids matter: restarting them at the cache length gives different logits
    shifted = R.DescribeRun(**{**llava_run.__dict__, "next_position": ctx.n_tokens})
    b = R.answer(R.Context(shifted, ctx.kept, "query", None, None), QUESTION, max_new_tokens=1)
    assert not torch.allclose(b.step_logits, oracle, atol=1e-3)


def test_query_plus_band_topk_equals_a_masked_plain_forward(llava_run):
    run = llava_run
    ctx = R.compress(run, "query+topk", k_percent=25, select="band")
    kept_image = sorted(set(ctx.kept[0].tolist()) & set(run.image_positions.tolist()))
    assert len(kept_image) == R.n_keep(25, run.n_image) == 4
    assert all(torch.equal(ctx.kept[0], ctx.kept[layer]) for layer in range(run.num_layers))  # one set for all
    a = R.answer(ctx, QUESTION, max_new_tokens=1)
    P, n = run.prompt_length, a.step_logits.shape[0]
    T = P + n
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    hidden = [p for p in run.image_positions.tolist() if p not in kept_image]
    mask[P:, hidden] = False
    oracle = _plain_logits(run, mask4d=mask[None, None])
    assert torch.allclose(a.step_logits, oracle, atol=1e-5)
    # and the cache holds exactly the original (rotated) keys of the kept positions
    cache = ctx.cache()
    layer = run.num_layers - 1
    assert torch.equal(cache.layers[layer].keys, run.keys[layer][:, :, ctx.kept[layer]])


def test_a_context_without_the_image_does_not_depend_on_the_image(llava_run):
    """Text positions that never saw the image (KO image -> text in the prefill) and K = 0: two different images
    must give identical answer logits; with the image visible to the text they differ (the query carries it)."""
    vlm = llava_run.vlm
    blind = Knockout(source="image", target="text")
    a, b = (R.answer(R.compress(R.describe(vlm, _image(seed=s), max_new_tokens=1, knockout=blind), "query"),
                     QUESTION, max_new_tokens=1).step_logits for s in (1, 2))
    assert torch.allclose(a, b, atol=1e-6)
    c, d = (R.answer(R.compress(R.describe(vlm, _image(seed=s), max_new_tokens=1), "query"), QUESTION,
                     max_new_tokens=1).step_logits for s in (1, 2))
    assert not torch.allclose(c, d, atol=1e-4)


def test_rankings(llava_run):
    run = llava_run
    rank = R.rank_image_tokens(run, "attention")
    assert rank.shape == (run.num_layers, run.n_image)
    expected = run.generation.record.image_map.float().mean(0)  # [L, N]
    for layer in range(run.num_layers):
        got = expected[layer, rank[layer]]
        assert (got[:-1] >= got[1:]).all()  # descending by received attention
    norm = R.rank_image_tokens(run, "norm")
    assert (run.hidden_norms.gather(1, norm)[:, :-1] >= run.hidden_norms.gather(1, norm)[:, 1:]).all()
    r0, r0b, r1 = (R.rank_image_tokens(run, "random", seed=s) for s in (0, 0, 1))
    assert torch.equal(r0, r0b) and not torch.equal(r0, r1)
    assert sorted(r0[0].tolist()) == list(range(run.n_image))
    with pytest.raises(R.RepromptError, match="unknown selection"):
        R.rank_image_tokens(run, "nope")
    topk = R.compress(run, "topk", k_percent=5)
    assert topk.n_tokens == 1 and set(topk.kept.flatten().tolist()) <= set(run.image_positions.tolist())


def test_k_rounding():
    assert [R.n_keep(k, 576) for k in (0, 1, 2, 5, 10, 20, 100)] == [0, 6, 12, 29, 58, 116, 576]
    assert R.n_keep(1, 64) == 1 and R.n_keep(5, 64) == 4
    with pytest.raises(R.RepromptError, match="percentage"):
        R.n_keep(101, 64)


@pytest.mark.parametrize("arch", ["qwen2_vl", "internvl"])
def test_cache_oracles_on_other_architectures(arch):
    """Qwen2-VL: M-RoPE text positions continue from P + rope_delta; InternVL: tiles + <img> markers."""
    model, processor = build(arch)
    vlm = wrap(model, processor)
    run = R.describe(vlm, _image(56 if arch == "qwen2_vl" else 32, seed=1), max_new_tokens=2, hidden_norms=False)
    if arch == "qwen2_vl":
        assert run.next_position != run.prompt_length  # M-RoPE positions run behind the sequence
    else:
        assert run.next_position == run.prompt_length
    full = R.answer(R.compress(run, "context"), QUESTION, max_new_tokens=1)
    assert torch.allclose(full.step_logits, _plain_logits(run), atol=1e-4)
    query = R.answer(R.compress(run, "query"), QUESTION, max_new_tokens=1)
    oracle = _plain_logits(run, knockout=Knockout(source="image", target="generated"))
    assert torch.allclose(query.step_logits, oracle, atol=1e-4)


def test_exact_reader_answers_toy_questions_from_the_true_description():
    from vlmflow.toy.questions import scene_questions
    from vlmflow.toy.scenes import make_scene

    n = 0
    for i in range(30):
        scene = make_scene(3, "test", i)
        for qa in scene_questions(scene):
            if qa.kind in ("exists", "count", "color"):
                assert R.exact_reader_answer(scene.description, qa.question) == qa.answer, (qa, scene.description)
                n += 1
            elif qa.kind == "position":
                assert R.exact_reader_answer(scene.description, qa.question) is None
    assert n > 100
    assert R.exact_reader_answer("nothing", "is there a red circle ?") == "no"


def test_variants_and_score_table_show_a_constant_answer():
    import pandas as pd

    assert R.Variant.parse("query+topk@5") == R.Variant("query+topk", 5.0)
    assert R.Variant.parse("describe-reader").name == R.READER_NAME
    with pytest.raises(R.RepromptError, match="needs a K"):
        R.Variant.parse("topk")
    with pytest.raises(R.RepromptError, match="unknown variant"):
        R.Variant.parse("half")
    rows = [{"image_id": i, "question_id": 2 * i + j, "kind": "exists", "truth": t, "answer": "Yes",
             "variant": "query", "context_tokens": 40} for i in range(10) for j, t in enumerate(("yes", "no"))]
    table = R.score_table(pd.DataFrame(rows), n_resamples=200)
    row = table.iloc[0]
    assert row["acc"] == 0.5 and row["share_yes"] == 1.0 and row["acc_plus"] == 0.0
    assert row["acc_true_yes"] == 1.0 and row["acc_true_no"] == 0.0
    assert row["acc_low"] <= 0.5 <= row["acc_high"]


def test_describe_to_llm_goes_through_the_openai_compatible_client(monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_openai_server import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-reprompt")
    with FakeOpenAI(lambda body: "yes" if "red circle" in body["messages"][-1]["content"] else "no",
                    expected_key="sk-test-reprompt") as server:
        llm = R.DescriptionLLM(model="any-model", base_url=server.base_url)
        a = llm("large red circle , small blue ring", QUESTION)
        requests = server.chat_requests()
    assert a.strip('"') == "yes"
    body = requests[0]["body"]
    assert body["temperature"] == 0 and body["model"] == "any-model" and requests[0]["auth_ok"]
    assert "large red circle , small blue ring" in body["messages"][-1]["content"]
    assert QUESTION in body["messages"][-1]["content"]


def test_pope_items_from_coco_annotations_are_balanced_and_true():
    from vlmflow.data import coco_sample
    from vlmflow.errors import DataNotAvailableError

    try:
        sample = coco_sample(progress=False)
    except DataNotAvailableError as exc:
        pytest.skip(f"COCO sample not available: {exc}")
    items = R.pope_items(sample, n_images=3, sampling="adversarial", n_per_image=2)
    assert len(items) == 3
    for item in items:
        present = sample.objects(item.image_id)
        assert sorted(q["truth"] for q in item.questions) == ["no", "yes"]
        for q in item.questions:
            obj = q["question"].removeprefix("Is there a ").removeprefix("n ").removesuffix(" in the image?")
            assert (obj in present) == (q["truth"] == "yes"), (q, present)


def test_short_answers_are_scored_on_their_first_word():
    import pandas as pd

    rows = [{"image_id": 1, "question_id": 1, "kind": "count", "truth": "two", "answer": "two , large red circle",
             "variant": "v", "context_tokens": 3},
            {"image_id": 2, "question_id": 2, "kind": "count", "truth": "two", "answer": "three two",
             "variant": "v", "context_tokens": 3}]
    assert R.score_table(pd.DataFrame(rows), n_resamples=20).iloc[0]["acc"] == 0.5
    assert R.score_table(pd.DataFrame(rows), n_resamples=20, first_word=False).iloc[0]["acc"] == 0.0
