"""Qwen2-VL video input built without torchvision (adapters/qwen2_vl.py ``video_inputs``) and knockouts that name
frames (``Knockout(..., source_frames=...)``), on the tiny random Qwen2-VL: pixels against transformers' own image
processor, M-RoPE positions against the model's own get_rope_index, and frame knockouts against eager attention with
a 4D mask built here by hand (tests/oracles.py)."""
import copy

import numpy as np
import pytest
import torch
from PIL import Image

import vlmflow as vf
from tests.oracles import ORACLE, eager_forward
from tests.tiny import build
from vlmflow.adapters.qwen2_vl import video_inputs
from vlmflow.knockout import PositionError

SIDE = 24  # 3 x 3 merged tokens per frame on the tiny model (patch 4, merge 2)
Q = "what is in this picture ?"


def _frames(n: int, seed: int = 0) -> list:
    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def models():
    model, processor = build("qwen2_vl")
    eager = copy.deepcopy(model)
    eager.set_attn_implementation({"text_config": ORACLE})
    return vf.wrap(model, processor), eager


def test_one_frame_per_patch_equals_the_image_processor_per_frame(models):
    """Each frame of the video is what the image processor makes of it as an image (its temporal patch repeats the
    frame, as Qwen2-VL's image path does); frames follow each other in time."""
    vlm, _ = models
    frames = _frames(3)
    got = video_inputs(vlm.processor, frames)
    images = vlm.processor.image_processor(frames, return_tensors="pt")
    assert got["video_grid_thw"].tolist() == [[3, *images["image_grid_thw"][0, 1:].tolist()]]
    torch.testing.assert_close(got["pixel_values_videos"], images["pixel_values"], rtol=0, atol=1e-5)


def test_two_frames_per_patch_pair_consecutive_frames(models):
    """frames_per_patch=2: a patch holds two consecutive frames (the first half of each patch row is frame 2t, the
    second frame 2t + 1); an odd count repeats the last frame; a still video equals the image."""
    vlm, _ = models
    frames = _frames(3)
    got = video_inputs(vlm.processor, frames, frames_per_patch=2)
    assert got["video_grid_thw"][0, 0] == 2
    per_frame = video_inputs(vlm.processor, frames)["pixel_values_videos"]  # frame k, repeated, in its own patch
    n = per_frame.shape[0] // 3
    C, T = 3, 2
    def half(x, t):  # the time slot t of each flattened (C, T, p, p) patch
        return x.reshape(x.shape[0], C, T, -1)[:, :, t]
    pv = got["pixel_values_videos"]
    for patch, (a, b) in enumerate([(0, 1), (2, 2)]):
        rows = slice(patch * n, (patch + 1) * n)
        torch.testing.assert_close(half(pv[rows], 0), half(per_frame[a * n:(a + 1) * n], 0), rtol=0, atol=1e-5)
        torch.testing.assert_close(half(pv[rows], 1), half(per_frame[b * n:(b + 1) * n], 0), rtol=0, atol=1e-5)
    still = video_inputs(vlm.processor, [frames[0], frames[0]], frames_per_patch=2)["pixel_values_videos"]
    torch.testing.assert_close(still, per_frame[:n], rtol=0, atol=1e-5)


def test_video_prompt_roles_frames_and_positions(models):
    vlm, _ = models
    inputs, roles = vlm.adapter.prepare_video([_frames(3), _frames(2, seed=1)], [Q, "describe the image"])
    ids = inputs["input_ids"]
    video_id = vlm.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    for row, n_frames in enumerate((3, 2)):
        is_video = ids[row] == video_id
        assert roles.count("image", row) == int(is_video.sum()) == n_frames * 9
        frames = roles.frame_ids()[row]
        assert frames[is_video].tolist() == [k for k in range(n_frames) for _ in range(9)]
        assert bool((frames[~is_video] == -1).all())
    positions, _ = vlm.model.model.get_rope_index(ids, inputs["mm_token_type_ids"],
                                                  video_grid_thw=inputs["video_grid_thw"],
                                                  attention_mask=inputs["attention_mask"])
    row0 = positions[:, 0][:, ids[0] == video_id]
    assert row0[0].tolist() == [row0[0, 0].item() + k for k in range(3) for _ in range(9)]  # time = frame


def _oracle_mask(inputs, frames_blocked, target_from: int, n_layers: int, layers=None):
    """{layer: [1, 1, T, T]}: -inf from every query at or after ``target_from`` to the video tokens of the blocked
    frames, counted here from the ids and the grid alone."""
    ids = inputs["input_ids"][0]
    video = (ids == 7).nonzero().flatten()  # <|video_pad|> of the tiny vocabulary
    t, h, w = inputs["video_grid_thw"][0].tolist()
    per_frame = h * w // 4
    T = ids.shape[0]
    cols = torch.zeros(T, dtype=torch.bool)
    for k, pos in enumerate(video.tolist()):
        cols[pos] = (k // per_frame) in frames_blocked
    rows = torch.arange(T) >= target_from
    mask = torch.zeros(1, 1, T, T)
    mask[0, 0][rows[:, None] & cols[None, :]] = float("-inf")
    return {layer: mask for layer in (range(n_layers) if layers is None else layers)}


@pytest.mark.parametrize("frames, layers", [([0], None), ([1, 2], [1, 2])])
def test_frame_knockout_equals_eager_oracle(models, frames, layers):
    vlm, eager = models
    assert vlm.tokenizer.convert_tokens_to_ids("<|video_pad|>") == 7
    inputs, roles = vlm.adapter.prepare_video([_frames(3)], [Q])
    batch = vf.model.Batch(inputs, roles, [(SIDE, SIDE)], [Q])
    ko = vf.Knockout("image", ("query", "assistant"), layers=layers, source_frames=frames)
    got = vlm.forward(batch, knockout=ko).logits
    after_video = int(roles.positions("query")[0])
    ref = eager_forward(eager, dict(inputs), _oracle_mask(inputs, frames, after_video, vlm.num_layers, layers)).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    base = vlm.forward(batch).logits
    assert (got[0, -1] - base[0, -1]).abs().max() > 1e-4  # the frames really matter
    other = vf.Knockout("image", ("query", "assistant"), layers=layers, source_frames=[0 if frames != [0] else 1])
    assert (vlm.forward(batch, knockout=other).logits[0, -1] - got[0, -1]).abs().max() > 1e-4


def test_single_image_is_frame_zero_and_unknown_frames_are_refused(models):
    vlm, _ = models
    batch = vlm.prepare(_frames(1)[0], Q)
    whole = vlm.forward(batch, knockout=vf.Knockout("image", "query")).logits
    frame0 = vlm.forward(batch, knockout=vf.Knockout("image", "query", source_frames=[0])).logits
    assert torch.equal(whole, frame0)
    with pytest.raises(PositionError, match="source frame 1 is not in the prompt"):
        vlm.forward(batch, knockout=vf.Knockout("image", "query", source_frames=[1]))


def test_frame_spec_string_round_trips():
    ko = vf.Knockout("image", "generated", layers=[0, 1, 2, 3], source_frames=[3, 0, 1])
    assert ko.spec_id == "image{0-1,3}:generated@0-3"
    assert vf.Knockout.parse(ko.spec_id) == ko
    both = vf.Knockout.parse("image[5-9]{0}:generated")
    assert both.source_positions == (5, 6, 7, 8, 9) and both.source_frames == (0,)
    with pytest.raises(PositionError):
        vf.Knockout("image", "generated", source_frames=[-1])
