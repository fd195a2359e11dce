"""Clip training plumbing for the toy Qwen2-VL (toy/video.py) on the TINY config: clip batches feed the adapter's
inference prompt through Qwen2-VL's video input, explicit M-RoPE positions equal the model's own, a few steps lower
the loss, the event probe's targets are where consecutive frames differ, and greedy clip generation through vlmflow equals transformers' own generate."""
import copy

import numpy as np
import pytest
import torch

import vlmflow as vf
from tests.oracles import train_losses
from vlmflow.toy.architectures import get_arch
from vlmflow.toy.clips import EVENT_VERBS, FACT_FAMILIES, ClipConfig, make_clip
from vlmflow.toy.model import TINY
from vlmflow.toy.scenes import SceneConfig
from vlmflow.toy.video import (
    EVENT_HEADS,
    IGNORED,
    ClipBatcher,
    EventTap,
    clip_eval,
    event_heads,
    event_probe_recall,
    event_token_targets,
    make_clip_batch,
    sample_clip_question,
)

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
    feed = {k: v for k, v in batch.items() if k not in ("labels", "event_targets")}
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
    assert set(metrics) == {"describe_video_f1", "describe_video_f1_interval", "count_at_end_acc", "n_clips",
                            *recalls} and metrics["n_clips"] == 2
    low, high = metrics["describe_video_f1_interval"]
    assert 0 <= low <= metrics["describe_video_f1"] <= high <= 1


def _changed_tokens(before, after, grid: int) -> np.ndarray:
    """bool[grid * grid]: the tokens (row-major) where two rendered frames differ in any pixel."""
    diff = (np.asarray(before, dtype=np.int16) != np.asarray(after, dtype=np.int16)).any(-1)
    side = diff.shape[0] // grid
    return diff.reshape(grid, side, grid, side).any(axis=(1, 3)).reshape(-1)


def _object_tokens(frame, grid: int) -> np.ndarray:
    """bool[grid * grid]: the tokens of a rendered frame with a pixel off the background (the frame's commonest
    colour)."""
    pixels = np.asarray(frame, dtype=np.int16).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    off = (np.asarray(frame, dtype=np.int16) != colours[counts.argmax()]).any(-1)
    side = off.shape[0] // grid
    return off.reshape(grid, side, grid, side).any(axis=(1, 3)).reshape(-1)


def test_event_targets_are_the_tokens_where_consecutive_frames_differ():
    """Independent oracle: the rendered frames share one background, so the tokens whose pixels change from frame
    k-1 to k are exactly the changed object's tokens; each carries the event's kind, every other token of frame k
    is 0, and frame 0 (nothing before it) is ignored. The attribute rows name the changed object as the event's
    clause does (its words before the change) on exactly those tokens and ignore every other token. The place rows
    name the row and column words of the place a move's clause ends with ("moves to the bottom right"), read from
    the clip's description, on the changed tokens that show an object in frame k (the new cells), and ignore every
    other token, of every other event too."""
    from vlmflow.toy.clips import EVENT_KINDS
    from vlmflow.toy.scenes import position_axes

    grid = 8
    heads = event_heads(True, True)
    assert [name for name, _ in heads] == ["event", "shape", "color", "size", "row", "column"]
    seen = set()
    moves = 0
    for i in range(40):
        clip = make_clip(0, "train", i)
        all_targets = event_token_targets(clip, grid).reshape(-1, len(clip.frames), grid * grid)
        targets, attributes, places = all_targets[0], all_targets[1:4], all_targets[4:]
        assert (targets[0] == IGNORED).all() and (attributes[:, 0] == IGNORED).all()
        clauses = clip.description.split(" . then ")[1:]
        assert len(clauses) == len(clip.events)
        place_asked = np.zeros_like(places[0], dtype=bool)
        for event, clause in zip(clip.events, clauses):
            changed = _changed_tokens(clip.images[event.frame - 1], clip.images[event.frame], grid)
            assert changed.any()
            np.testing.assert_array_equal(targets[event.frame] > 0, changed)
            assert set(targets[event.frame][changed]) == {EVENT_KINDS.index(event.kind) + 1}
            first_changed = attributes[:, event.frame, changed][:, 0]
            words = [words[c - 1] for (_, words), c in zip(heads[1:4], first_changed)]
            assert words == [event.object.shape, event.object.color, event.object.size]
            assert clip.description.count(f"{' '.join(reversed(words))} {EVENT_VERBS[event.kind]}") >= 1
            assert (attributes[:, event.frame, changed] == attributes[:, event.frame, changed][:, :1]).all()
            assert (attributes[:, event.frame, ~changed] == IGNORED).all()
            if event.kind == "move":
                moves += 1
                new_cells = changed & _object_tokens(clip.images[event.frame], grid)
                assert new_cells.any() and (changed & ~new_cells).any()  # the object left its old cells
                place = clause.split(" moves to the ")[1]
                expected = [words.index(w) + 1 for (_, words), w in zip(heads[4:], position_axes(place))]
                np.testing.assert_array_equal(places[:, event.frame, new_cells],
                                              np.repeat(np.array(expected)[:, None], new_cells.sum(), 1))
                place_asked[event.frame] |= new_cells
            seen.add(event.kind)
        assert (places[:, ~place_asked] == IGNORED).all()
    assert seen == set(EVENT_KINDS) and moves >= 5
    assert EVENT_HEADS[0][1] == ("appears", "disappears", "moves", "turns")
    with pytest.raises(ValueError, match="places=True needs attributes=True"):
        event_heads(False, True)


@pytest.mark.parametrize(("attributes", "places"), [(False, False), (True, False), (True, True)])
def test_event_tap_keeps_the_layers_output_at_the_video_tokens_and_the_event_probe_learns(attributes, places):
    from vlmflow.toy.probe import TokenProbe
    from vlmflow.toy.train import forward_loss

    model, processor = _toy()
    batch = make_clip_batch(0, 0, 3, ClipBatcher(model, processor), config=CLIPS)
    assert batch["event_targets"].shape[1:] == (len(event_heads(True, True)), int((batch["input_ids"] == model.config.video_token_id).sum(1).max()))
    tap = EventTap(model, 0)
    feed = {k: v for k, v in batch.items() if k not in ("labels", "event_targets")}
    with torch.no_grad():
        hidden = model(**feed, output_hidden_states=True).hidden_states[1]  # [0] is the embeddings
    kept = tap.take(batch["input_ids"], model.config.video_token_id)
    for row in range(3):
        video = batch["input_ids"][row] == model.config.video_token_id
        torch.testing.assert_close(kept[row, :int(video.sum())], hidden[row, video])
        assert (batch["event_targets"][row, :, int(video.sum()):] == IGNORED).all()
    probe = TokenProbe(model, processor.tokenizer, heads=event_heads(attributes, places), balanced=True)
    model.train()

    def event_loss():
        with_events = forward_loss(model, batch, share_prefix=False, events=(probe, tap), event_weight=1.0)
        return with_events - forward_loss(model, batch, share_prefix=False)

    opt = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=3e-3)
    losses = []
    for _ in range(12):
        loss = event_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    tap.remove()


def test_the_vision_tower_sees_one_frame_at_a_time():
    """Why the event probe reads the language model (video.py): a frame's video tokens out of the tower (merger
    output) do not change when another frame of the clip does; only the language model can compare frames."""
    model, processor = _toy()
    vlm = vf.wrap(model, processor)
    clip = make_clip(0, "train", 1, CLIPS)
    other = [clip.images[0], make_clip(0, "train", 2, CLIPS).images[0], *clip.images[2:]]  # frame 1 replaced

    def tokens(frames):
        inputs, _ = vlm.adapter.prepare_video([frames], ["describe the video"])
        with torch.no_grad():
            out = model.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"],
                                                 video_grid_thw=inputs["video_grid_thw"])
        return torch.cat(out.pooler_output).reshape(len(frames), TINY.grid ** 2, -1)  # merger output, per frame

    a, b = tokens(clip.images), tokens(other)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)
    assert not torch.allclose(a[1], b[1])


def test_event_probe_recall_per_class_of_a_probe_that_always_names_one_class():
    """Known answers: a probe whose bias always wins names every token ``none`` (recall 1 there, 0 for every event)
    or every token ``appears`` (the reverse)."""
    from vlmflow.toy.probe import TokenProbe

    model, processor = _toy()
    model.eval()
    tap = EventTap(model, 0)
    probe = TokenProbe(model, processor.tokenizer, heads=EVENT_HEADS)
    batcher = ClipBatcher(model, processor, CLIPS)
    for favoured, name in ((0, "none"), (1, "appears")):
        with torch.no_grad():
            probe.bias.zero_()
            probe.bias[0, favoured] = 1e4
        recall = event_probe_recall(model, (probe, tap), batcher, n=6, batch_size=4)
        assert recall.pop(f"event_recall_{name}") == 1.0
        assert recall and set(recall.values()) == {0.0}  # the other classes present in these clips
    tap.remove()


def test_event_attribute_accuracy_of_a_probe_that_always_names_one_word():
    """Known answer: attribute and place heads whose bias always picks word 1 (``circle``, ``red``, ``small``,
    ``top``, ``left``) are right on exactly the tokens each head is asked about (the event tokens; a move's new cells)
    whose word is that one, counted here from the batches' own clips."""
    from vlmflow.toy.probe import TokenProbe

    model, processor = _toy()
    model.eval()
    tap = EventTap(model, 0)
    heads = event_heads(True, True)
    probe = TokenProbe(model, processor.tokenizer, heads=heads)
    batcher = ClipBatcher(model, processor, CLIPS)
    with torch.no_grad():
        probe.bias.zero_()
        probe.bias[1:, 1] = 1e4
    accuracy = event_probe_recall(model, (probe, tap), batcher, n=12, batch_size=4)
    hits, total = np.zeros(len(heads) - 1), np.zeros(len(heads) - 1)
    for step in range(3):  # the batches event_probe_recall draws: 12 clips in 3 batches of 4
        targets = make_clip_batch(step, 0, 4, batcher, split="val")["event_targets"].numpy()
        changed = targets[:, 0] > 0
        for k in range(1, len(heads)):
            asked = changed if k < 4 else targets[:, k] > 0  # the place heads: a move's new cells only
            total[k - 1] += asked.sum()
            hits[k - 1] += (targets[:, k][asked] == 1).sum()
    assert total.min() > 0 and total[3] < total[0]  # some moves, among other events
    expected = {f"event_attribute_acc_{name}": round(float(h / t), 4) for (name, _), h, t in zip(heads[1:], hits, total)}
    assert {k: v for k, v in accuracy.items() if k.startswith("event_attribute")} == expected
    assert 0 < hits.sum() < total.sum()  # not all right or all wrong: the count tells them apart
    tap.remove()


def test_export_works_while_the_event_tap_holds_a_training_graph(tmp_path):
    """Regression (a training run died at an export after a still-scene step): the layer hook fires on every
    forward, export deep-copies the model and reaches the tap through the hook; the copy must keep nothing."""
    from vlmflow.toy.train import export

    model, processor = _toy()
    tap = EventTap(model, 0)
    batch = make_clip_batch(0, 0, 2, ClipBatcher(model, processor), config=CLIPS)
    model(**{k: v for k, v in batch.items() if k not in ("labels", "event_targets")})
    assert tap.hidden is not None and tap.hidden.grad_fn is not None
    export(model, processor, tmp_path / "out")
    assert (tmp_path / "out" / "config.json").exists()
    assert tap.hidden is not None  # the original tap is untouched by the copy
    tap.remove()
