"""Clip training plumbing for the toy Qwen2-VL (toy/video.py) on the TINY config: clip batches feed the adapter's
inference prompt through Qwen2-VL's video input, explicit M-RoPE positions equal the model's own, a few steps lower
the loss, and greedy clip generation through vlmflow equals transformers' own generate."""
import copy

import numpy as np
import torch

import vlmflow as vf
from tests.oracles import train_losses
from vlmflow.toy.architectures import get_arch
from vlmflow.toy.clips import FACT_FAMILIES, ClipConfig, make_clip
from vlmflow.toy.model import TINY
from vlmflow.toy.scenes import SceneConfig
from vlmflow.toy.video import ClipBatcher, clip_eval, make_clip_batch, sample_clip_question

CLIPS = ClipConfig(2, 3, SceneConfig(image_size=TINY.image_size, cells=TINY.grid // 2, max_objects=3))


def _toy():
    return get_arch("qwen2-vl").build(TINY, seed=0)


def test_clip_batch_is_the_inference_prompt_plus_answer_and_positions_are_the_models():
    model, processor = _toy()
    batcher = ClipBatcher(model, processor)
    clips = [make_clip(0, "train", i, CLIPS) for i in range(3)]
    rng = np.random.default_rng(0)
    qas = [sample_clip_question(c, rng) for c in clips]
    batch = batcher(clips, qas)
    vlm = vf.wrap(model, processor)
    tok = processor.tokenizer
    for row, (clip, qa) in enumerate(zip(clips, qas)):
        inputs, roles = vlm.adapter.prepare_video([clip.images], [qa.question])
        prompt = inputs["input_ids"][0].tolist()
        n = int(batch["attention_mask"][row].sum())
        assert batch["input_ids"][row, :len(prompt)].tolist() == prompt
        target = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert target == tok(qa.answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert n == len(prompt) + len(target)
        assert roles.count("image") == len(clip.images) * TINY.grid ** 2  # one temporal patch per frame
    feed = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        explicit = model(**feed).logits
        model.model.rope_deltas = None
        own = model(**{k: v for k, v in feed.items() if k != "position_ids"}).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(explicit[mask], own[mask], rtol=0, atol=1e-5)


def test_a_few_steps_on_clips_reduce_the_loss():
    from vlmflow.toy.train import forward_loss

    model, processor = _toy()
    model.train()
    batch = make_clip_batch(0, 0, 6, ClipBatcher(model, processor), config=CLIPS)
    losses = train_losses(model, lambda: forward_loss(model, batch, share_prefix=False))
    assert losses[-1] < 0.8 * losses[0]


def test_clip_generation_equals_transformers_generate():
    model, processor = _toy()
    plain = copy.deepcopy(model).eval()
    vlm = vf.wrap(model, processor)
    clips = [make_clip(0, "test", i, CLIPS) for i in range(2)]
    inputs, roles = vlm.adapter.prepare_video([c.images for c in clips], ["describe the video"] * 2)
    gens = vlm.generate_batch(vf.model.Batch(inputs, roles, [(32, 32)] * 2, ["describe the video"] * 2),
                              max_new_tokens=6, min_new_tokens=6)
    with torch.no_grad():
        ref = plain.generate(**inputs, do_sample=False, max_new_tokens=6, min_new_tokens=6)
    P = inputs["input_ids"].shape[1]
    assert [g.token_ids for g in gens] == [ref[b, P:].tolist() for b in range(2)]
    metrics = clip_eval(vlm, n=2, split="test", config=CLIPS, max_new_tokens=4)
    recalls = {f"describe_video_recall_{f}" for f in FACT_FAMILIES}
    assert set(metrics) == {"describe_video_f1", "count_at_end_acc", "n_clips", *recalls} and metrics["n_clips"] == 2
