"""The Video chapter's library (vlmflow.video_analysis and the clip paths it opens in the sweep engine, the data
layer and re-prompting) on tiny random Qwen2-VL models built in code:

- attention mass per frame equals an independent sum of eager attention probabilities (transformers' own eager
  attention, output_attentions) over each frame's tokens, counted from the ids and the video grid alone; the frames'
  masses sum to the video's; frame k's key share is its token count over the keys the row sees;
- the sweep engine on clips (``Video``) equals ``vlm.generate`` with the same frame knockout, free and forced, for
  clips of different frame counts in one call; a frame knockout's boundary is the first text position after the
  video, and it leaves every video token's hidden state as it was; a top-K selection naming frames is refused;
- single-turn re-prompting of a clip with the whole context kept equals the plain prompt of the clip;
- clip data resolve to the toy clips; the naming token of each event clause is found; clip answers are scored by
  the objects they name.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import vlmflow as vf
from tests.oracles import extend
from tests.tiny import build
from vlmflow.adapters.base import Video
from vlmflow.sweep import SweepConfig, SweepEngine, SweepError, boundary
from vlmflow.video_analysis import (
    clip_answer_correct,
    event_mentions,
    frame_configs,
    frame_mass,
    frames_of_image_tokens,
    split_by_frame,
)

SIDE = 24  # 3 x 3 merged tokens per frame on the tiny model (patch 4, merge 2)
Q = "describe the image"
VIDEO_ID = 7  # <|video_pad|> in the tiny vocabulary


def _frames(n: int, seed: int = 0) -> Video:
    rng = np.random.RandomState(seed)
    return Video(Image.fromarray(rng.randint(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(n))


@pytest.fixture(scope="module")
def models():
    model, processor = build("qwen2_vl")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation({"text_config": "eager"})
    return vf.wrap(model, processor), eager


def _frame_of_positions(input_ids, grid) -> dict[int, list[int]]:
    """frame -> its video token positions, from the ids and the (t, h, w) grid alone (merge 2)."""
    video = (input_ids == VIDEO_ID).nonzero().flatten().tolist()
    t, h, w = (int(v) for v in grid)
    per = h * w // 4
    return {k: video[k * per:(k + 1) * per] for k in range(t)}


def test_frame_mass_equals_eager_attention_per_frame(models):
    vlm, eager = models
    clip = _frames(3)
    gen = vlm.generate(clip, Q, record=vf.Record(rows="generated"), max_new_tokens=4, min_new_tokens=4)
    assert len(gen.token_ids) == 4
    batch = vlm.prepare(clip, Q)
    full = extend(batch.inputs, torch.tensor([gen.token_ids[:-1]]))
    with torch.no_grad():
        probs = eager(**full, output_attentions=True).attentions  # per layer [1, H, T, T]
    by_frame = _frame_of_positions(batch.inputs["input_ids"][0], batch.inputs["video_grid_thw"][0])
    ids = frames_of_image_tokens(gen.roles)
    mass, share = frame_mass(gen.record, ids)
    rows = gen.record.row_positions.tolist()
    assert mass.shape == (len(rows), vlm.num_layers, 3)
    for r, pos in enumerate(rows):
        for layer in range(vlm.num_layers):
            p = probs[layer][0].mean(0)[pos]  # head mean, the row of this position
            expected = [float(p[by_frame[k]].sum()) for k in range(3)]
            np.testing.assert_allclose(mass[r, layer], expected, rtol=0, atol=1e-5)
        for k in range(3):  # causal, unpadded: the row sees positions 0..pos
            assert share[r, k] == pytest.approx(len(by_frame[k]) / (pos + 1), abs=1e-6)
    np.testing.assert_allclose(mass.sum(-1), gen.record.mass("image").numpy(), rtol=0, atol=1e-5)
    assert not np.allclose(mass[..., 0], mass[..., 1], atol=1e-4)  # frames really differ: the test can tell them apart


def test_split_by_frame_refuses_a_length_mismatch():
    assert split_by_frame([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1]).tolist() == [3.0, 7.0]
    with pytest.raises(Exception, match="3 image-token values but 4 frame ids"):
        split_by_frame([1.0, 2.0, 3.0], [0, 0, 1, 1])


def test_sweep_engine_on_clips_equals_generate_with_frame_knockouts(models):
    vlm, _ = models
    clips = [_frames(3), _frames(2, seed=1), _frames(3, seed=2)]
    ko = frame_configs(3)[1].knockouts
    configs = [SweepConfig(), *frame_configs(2), SweepConfig(ko, force_prefix=2),
               SweepConfig((vf.Knockout("image", "generated", layers=[2, 3], source_frames=[0]),))]
    engine = SweepEngine(vlm, max_new_tokens=5, batch_size=3)
    per_clip = engine.run_many(clips, configs, Q)
    for clip, results in zip(clips, per_clip):
        base = vlm.generate(clip, Q, max_new_tokens=5)
        for cfg, res in zip(configs, results):
            force = base.token_ids[:cfg.force_prefix] if cfg.force_prefix else None
            ref = vlm.generate(clip, Q, knockout=list(cfg.knockouts) or None, max_new_tokens=5, force_prefix=force)
            assert res.token_ids == ref.token_ids, cfg.spec_id
    texts = {r.spec_id: r.token_ids for r in per_clip[0]}
    assert len(set(map(tuple, texts.values()))) > 1, "the frame knockouts change nothing here: the test is weak"


def test_frame_knockout_boundary_and_untouched_video_tokens(models):
    vlm, _ = models
    batch = vlm.prepare(_frames(3), Q)
    roles = batch.roles
    role_ids, frames = roles.ids[0].tolist(), roles.frames[0].tolist()
    after_video = max(roles.positions("image", 0).tolist()) + 1
    for cfg in frame_configs(3):
        assert boundary(cfg, role_ids, vlm.num_layers, frames) == after_video
    ko = frame_configs(3)[1].knockouts
    plain = vlm.forward(batch, output_hidden_states=True).output.hidden_states
    hidden = vlm.forward(batch, knockout=list(ko), output_hidden_states=True).output.hidden_states
    video = roles.positions("image", 0)
    for a, b in zip(plain, hidden):
        assert torch.equal(a[0, :after_video], b[0, :after_video])  # the prompt up to the last video token: as it was
    assert (plain[-1][0, after_video:] - hidden[-1][0, after_video:]).abs().max() > 1e-4
    assert len(video) == 27


def test_top_k_selection_naming_frames_is_refused():
    from vlmflow.selection import ImageSelection

    with pytest.raises(SweepError, match="names source frames"):
        SweepConfig((vf.Knockout("image", "generated", source_frames=[0]),), keep=ImageSelection(5, "attention"))


def test_clip_reprompting_with_the_whole_context_equals_the_plain_clip_prompt(models):
    from vlmflow import reprompt as R

    vlm, _ = models
    clip = _frames(2)
    question = "how many objects ?"
    run = R.describe(vlm, clip, Q, max_new_tokens=3)
    assert run.n_image == 18
    ctx = R.compress(run, "context", turn="single")
    a = R.answer(ctx, question, max_new_tokens=3)
    batch = vlm.prepare(clip, question)
    q0 = int(batch.roles.positions("query", 0)[0])
    oracle = vlm.forward(batch).logits[0, q0:].float()
    torch.testing.assert_close(a.step_logits, oracle, rtol=0, atol=1e-5)
    full = R.full_answer(vlm, clip, question, max_new_tokens=3)
    assert a.token_ids == full.token_ids
    # K = 0 (query only) hides every frame from the question: another answer distribution
    none = R.answer(R.compress(run, "query", turn="single"), question, max_new_tokens=1)
    assert not torch.allclose(none.first_logits, a.first_logits, atol=1e-4)


def test_clip_data_resolve_to_the_toy_clips():
    from vlmflow.data import UnknownDatasetError, resolve
    from vlmflow.toy.clips import make_clip

    data = resolve("toy-clips-test", 2, seed=3)
    assert data.keys == ["toy-clips-test-00000", "toy-clips-test-00001"]
    video = data.images[1].load()
    clip = make_clip(3, "test", 1)
    assert isinstance(video, Video) and len(video) == len(clip.frames)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(video, clip.images))
    assert data.truth(1).events == clip.events
    assert resolve("toy-clips-test", 2, seed=4).data_id != data.data_id
    assert resolve("toy-clips-val", 2, seed=3).data_id != data.data_id
    with pytest.raises(UnknownDatasetError, match="toy-clips-test"):
        resolve("toy-clips", 2)


def test_event_mentions_point_at_each_event_clause_shape_word():
    from types import SimpleNamespace

    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.clips import make_clip
    from vlmflow.toy.model import TINY

    _, processor = get_arch("qwen2-vl").build(TINY, seed=0)
    tok = processor.tokenizer
    clip = next(c for c in (make_clip(0, "test", i) for i in range(40)) if len(c.events) >= 2)
    ids = tok(clip.description, add_special_tokens=False)["input_ids"]
    found = event_mentions(SimpleNamespace(token_ids=ids), tok, clip)
    assert [e for e, _ in found] == clip.events
    for event, m in found:
        assert tok.decode([ids[m.token]]).strip() == event.object.shape
    # a clause with the wrong object matches no event
    wrong = clip.description.replace(clip.events[0].clause(), clip.events[0].clause().replace(
        clip.events[0].object.color, next(c for c in ("red", "blue") if c != clip.events[0].object.color)))
    ids = tok(wrong, add_special_tokens=False)["input_ids"]
    assert clip.events[0] not in [e for e, _ in event_mentions(SimpleNamespace(token_ids=ids), tok, clip)]


@pytest.mark.parametrize("kind, truth, answer, right", [
    ("count_at_end", "three", "three objects", True),
    ("count_at_end", "three", "two", False),
    ("appear", "small red circle", "a small red circle", True),
    ("appear", "small red circle", "small blue circle", False),
    ("appear", "nothing", "nothing", True),
    ("appear", "nothing", "small red circle", False),
    ("move", "small red circle , large blue ring", "large blue ring , small red circle", True),
    ("recolor", "small red circle", None, False),
    ("appear", "small red circle , large red circle", "red circle , small red circle", False),  # a size left unsaid
    ("move", "small red circle , small red circle", "small red circle", False),  # a multiset, not a set
])
def test_clip_answers_are_scored_by_the_objects_named(kind, truth, answer, right):
    assert clip_answer_correct(kind, truth, answer) is right


def test_stored_clip_sweep_scores_resumes_and_splits_the_mass_by_frame(tmp_path):
    """The clip sweep through the one stored path on a tiny toy Qwen2-VL: rows scored by the clip fact F1 of their
    own text, every frame count with its own frame knockouts, frame masses that add up to the stored video mass,
    and a second call that reads everything back; an image key outside the data is refused."""
    from vlmflow.store import load_results
    from vlmflow.sweep_run import stored_sweep_rows
    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.clips import clip_facts, make_clip, parse_clip, score_clip
    from vlmflow.toy.model import TINY
    from vlmflow.video_analysis import stored_clip_sweep

    vlm = vf.wrap(*get_arch("qwen2-vl").build(TINY, seed=0))
    rows, mass = stored_clip_sweep(tmp_path, vlm=vlm, n_clips=3, max_new_tokens=4, progress=False)
    assert rows.attrs["computed"] == len(rows) > 0
    for r in rows.itertuples():
        clip = make_clip(0, "test", int(r.image[-5:]))
        assert r.n_frames == len(clip.frames)
        assert r.f1 == score_clip(clip_facts(clip), parse_clip(r.text)).f1
    frames = rows[rows.family == "frame"]
    assert sorted(frames.groupby("image").frame.max() + 1) == sorted(rows.groupby("image").n_frames.first())
    attention = load_results(rows.attrs["store"], "attention").set_index(["image", "spec_id", "position", "layer"])
    summed = mass.groupby(["image", "spec_id", "position", "layer"])[["mass", "share"]].sum()
    np.testing.assert_allclose(summed["mass"], attention.loc[summed.index, "mass_image"], rtol=0, atol=2e-3)
    np.testing.assert_allclose(summed["share"], attention.loc[summed.index, "share_image"], rtol=0, atol=1e-6)
    again, _ = stored_clip_sweep(tmp_path, vlm=vlm, n_clips=3, max_new_tokens=4, progress=False)
    assert again.attrs["computed"] == 0 and again.text.tolist() == rows.text.tolist()
    with pytest.raises(SweepError, match="toy-clips-test-00009"):
        stored_sweep_rows(tmp_path, lambda n: [], vlm=vlm, data="toy-clips-test", n_images=3,
                          keys=["toy-clips-test-00009"])


def test_bad_video_inputs_are_refused_with_the_thing_at_fault(models):
    from vlmflow.errors import ImageReadError, UnsupportedModelError, UsageError

    vlm, _ = models
    assert vf.Video is Video
    with pytest.raises(UsageError, match="images or videos"):
        vlm.prepare([_frames(2), _frames(1)[0]], Q)
    with pytest.raises(ImageReadError, match="one size"):
        vlm.prepare(Video([*_frames(1), Image.new("RGB", (32, 32))]), Q)
    with pytest.raises(ImageReadError, match="at least one frame"):
        Video([])
    llava = vf.wrap(*build("llava"))
    with pytest.raises(UnsupportedModelError, match="llava adapter has no video input"):
        llava.prepare(_frames(2), Q)


def test_localization_per_frame_equals_an_independent_reading_of_the_record():
    """localize_clip with the true description forced, on a tiny toy Qwen2-VL: for each appear / move / recolour
    event, the object hit, its chance and the frame hit at each layer equal a reading of the recorded attention
    done here: the shape word's predicting row, the event frame's slice of the video tokens, and the object's mask
    pooled onto that frame's token grid (a token hits when its block holds a pixel of the mask)."""
    from vlmflow.localize.base import ROWS
    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.clips import DESCRIBE_VIDEO_PROMPT, make_clip
    from vlmflow.toy.model import TINY
    from vlmflow.video_analysis import LOCALIZED_EVENTS, localize_clip

    vlm = vf.wrap(*get_arch("qwen2-vl").build(TINY, seed=0))
    clip = next(c for c in (make_clip(0, "test", i) for i in range(40))
                if sum(e.kind in LOCALIZED_EVENTS for e in c.events) >= 2)
    rows, clip_row = localize_clip(vlm, clip, "c", tolerances=(0,), force_truth=True)
    events = [e for e in clip.events if e.kind in LOCALIZED_EVENTS]
    assert clip_row["n_localized"] == len(events) and len(rows) == len(events) * vlm.num_layers

    words = clip.description.split()
    ids = vlm.tokenizer(clip.description, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(words)  # word-level toy tokenizer: token i is word i
    gen = vlm.generate(Video(clip.images), DESCRIBE_VIDEO_PROMPT, record=vf.Record(rows=ROWS),
                       force_prefix=ids, max_new_tokens=len(ids))
    maps = gen.record.image_map.float().numpy()
    positions = gen.record.row_positions.tolist()
    F = len(clip.frames)
    n = maps.shape[-1] // F
    side = int(round(n ** 0.5))
    thens = [i for i, w in enumerate(words) if w == "then"]
    for event in events:
        start = thens[clip.events.index(event)]
        token = start + words[start:].index(event.object.shape)
        r = positions.index(gen.prompt_length + token - 1)
        mask = next(t for t in clip.frames[event.frame] if t.track == event.track).placed.mask
        H, W = mask.shape
        blocks = mask.reshape(side, H // side, side, W // side)
        covered = blocks.any(axis=(1, 3)).reshape(-1)
        coverage = blocks.mean(axis=(1, 3)).reshape(-1)
        got = [x for x in rows if x["track"] == event.track and x["frame"] == event.frame]
        for x in got:
            li = gen.record.layers.index(x["layer"])
            a = maps[r, li, event.frame * n:(event.frame + 1) * n]
            assert x["hit"] == bool(covered[int(np.argmax(a))])
            assert x["chance"] == pytest.approx(covered.mean())
            assert x["frame_hit"] == (int(np.argmax(maps[r, li])) // n == event.frame)
            assert x["frame_mass"] == pytest.approx(float(a.sum()), abs=1e-5)
            assert x["mass_in"] == pytest.approx(float((a * coverage).sum() / a.sum()), abs=1e-6)
    assert n >= 16, "too few tokens per frame for the hits to tell frames apart"


def test_stored_clip_reprompting_asks_the_clip_questions_and_resumes(tmp_path):
    """reprompt.stored_evaluate on clip data: every clip question of the chosen kinds with its exact answer, the
    "full" variant equal to the plain clip prompt's answer, and a rerun that computes nothing."""
    from vlmflow.reprompt import stored_evaluate
    from vlmflow.toy.architectures import get_arch
    from vlmflow.toy.clips import clip_questions, make_clip
    from vlmflow.toy.model import TINY
    from vlmflow.toy.train import export

    model, processor = get_arch("qwen2-vl").build(TINY, seed=0)
    folder = str(export(model, processor, tmp_path / "model", half=False))
    kinds = ("appear", "count_at_end")
    out = stored_evaluate(tmp_path / "results", ["full", "query+topk@20"], model=folder, data="toy-clips-test",
                          n_images=1, kinds=kinds, describe_tokens=4, max_new_tokens=3, progress=False)
    assert out.attrs["computed"] == 2 and len(out) == 1 * 2 * 2
    vlm = vf.wrap(model, processor)
    for r in out[out.variant == "full"].itertuples():
        clip = make_clip(0, "test", int(r.image_id[-5:]))
        assert r.truth == next(q["answer"] for q in clip_questions(clip) if q["kind"] == r.kind)
        assert r.answer == vlm.generate(Video(clip.images), r.question, max_new_tokens=3).text
    again = stored_evaluate(tmp_path / "results", ["full", "query+topk@20"], model=folder, data="toy-clips-test",
                            n_images=1, kinds=kinds, describe_tokens=4, max_new_tokens=3, progress=False)
    assert again.attrs["computed"] == 0 and again.answer.tolist() == out.answer.tolist()
