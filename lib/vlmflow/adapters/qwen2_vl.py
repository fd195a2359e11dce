"""Qwen2-VL and Qwen2.5-VL adapter (``Qwen/Qwen2-VL-*``, ``Qwen/Qwen2.5-VL-*``; model_types ``"qwen2_vl"``,
``"qwen2_5_vl"``). Both share the processor (``Qwen2VLImageProcessor``: smart_resize + 2x2 merge) and template.

Prompt = the released chat template for one user turn holding an image then the question (the template inserts
the default system prompt when the conversation has no system message)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n

Segments: ``system`` = the whole system turn; ``user`` = ``<|im_start|>user\\n<|vision_start|>``; ``image`` =
``<|image_pad|>`` (the processor expands it to grid_h*grid_w/merge^2 tokens); ``user`` = ``<|vision_end|>`` (image
start/end markers are template text before the user's words); ``query`` = the question; ``assistant`` =
``<|im_end|>\\n<|im_start|>assistant\\n``. The processor also returns ``mm_token_type_ids``, which the model needs
whenever ``image_grid_thw`` is passed; ``prepare`` forwards everything it returns.

Positions: M-RoPE (``rope_axes = 3``); the prompt's come from the model's own ``get_rope_index`` (captured by
``VLM.prefill``), text after it continues from ``max position + 1`` on all three axes (= ``P + rope_deltas``).

Geometry: ``geometry.qwen2_vl_geometry`` from the row's ``image_grid_thw`` (one image per row).

Video: ``prepare_video`` puts ``<|video_pad|>`` where the image was and builds ``pixel_values_videos`` /
``video_grid_thw`` with ``video_inputs`` (from the image processor's settings: no torchvision); every video token is
``image`` in the roles, with its frame index in ``TokenRoles.frames``.
"""
from __future__ import annotations

from vlmflow.adapters import register_adapter
from vlmflow.adapters.base import CHATML_FOLLOWUP, Adapter

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."


@register_adapter
class Qwen2VLAdapter(Adapter):
    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    system_prompt: str = QWEN_DEFAULT_SYSTEM
    rope_axes = 3  # M-RoPE: image tokens get (time, row, column) positions; text advances all three together

    @property
    def image_placeholder(self) -> str:
        return getattr(self.processor, "image_token", None) or "<|image_pad|>"

    def segments(self, question: str) -> list[tuple[str, str]]:
        return [
            ("system", f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n"),
            ("user", "<|im_start|>user\n<|vision_start|>"),
            ("image", self.image_placeholder),
            ("user", "<|vision_end|>"),
            ("query", question),
            ("assistant", "<|im_end|>\n<|im_start|>assistant\n"),
        ]

    def decoder_positions(self, position_ids, length, device=None):
        """As the base class, after dropping the packed text-position row that the model prepends when it computes
        M-RoPE itself (``[4, B, T]`` = text; time, height, width)."""
        if position_ids is not None and position_ids.ndim == 3 and position_ids.shape[0] == 4:
            position_ids = position_ids[1:]
        return super().decoder_positions(position_ids, length, device)

    def prepare_video(self, videos, questions, frames_per_patch: int = 1):
        """(BatchFeature, TokenRoles) of a batch of videos (each a list of PIL frames), as ``prepare`` is for images:
        roles carry each video token's frame (``TokenRoles.frames``), so knockouts can name frames. See
        ``video_inputs`` for ``frames_per_patch``."""
        return prepare_video(self, videos, questions, frames_per_patch)

    def followup_turn(self, question: str) -> str:
        """The chat template's next user turn after an empty assistant reply (``CHATML_FOLLOWUP``)."""
        return CHATML_FOLLOWUP.format(question=question)

    def geometry(self, image_size, inputs, row):
        from vlmflow.adapters.geometry import GeometryError, qwen2_vl_geometry

        thw = None
        if inputs is not None and "image_grid_thw" in inputs:
            grids = inputs["image_grid_thw"]
            if row >= len(grids):
                raise GeometryError(f"qwen2_vl: row {row} has no image_grid_thw entry ({len(grids)} images)")
            thw = grids[row]
        geo = qwen2_vl_geometry(image_size, thw, self.processor)
        if inputs is not None and "input_ids" in inputs:
            n = int((inputs["input_ids"][row] == self.image_token_id).sum())
            if n != geo.n_tokens:
                raise GeometryError(f"qwen2_vl: row {row} holds {n} image tokens but its grid gives {geo.n_tokens}")
        return geo


# ---- video -------------------------------------------------------------------------------------------------------
# Qwen2-VL reads a video as temporal patches: ``temporal_patch_size`` (2) consecutive frames per 3D patch, 2x2 merged
# like an image, each temporal patch a (t, row, column) block of M-RoPE positions. transformers builds that input with
# a video processor that needs torchvision (not installable here), so it is built directly from the image processor's
# own settings; an image is the one-patch case (the frame repeated), which the tests use as the oracle.

def video_inputs(processor, frames, frames_per_patch: int = 1) -> dict:
    """``pixel_values_videos`` [t * h * w, C * T * p * p] and ``video_grid_thw`` [[t, h, w]] of one video.

    ``frames``: PIL images of one size. ``frames_per_patch=1`` (the default, the toy clips): every frame fills one
    temporal patch by itself (repeated, exactly as the image processor repeats an image), so token ``k`` of the video
    shows frame ``k // (h * w / merge^2)``. ``frames_per_patch=temporal_patch_size``: consecutive frames share a
    patch (Qwen2-VL's own sampling of a longer video), the last frame repeated to fill the final patch."""
    import numpy as np
    import torch

    ip = getattr(processor, "image_processor", processor)
    p, m, T = int(ip.patch_size), int(ip.merge_size), int(ip.temporal_patch_size)
    if frames_per_patch not in (1, T):
        raise ValueError(f"frames_per_patch must be 1 or the temporal patch size {T}, got {frames_per_patch}")
    if not frames:
        raise ValueError("video_inputs: no frames")
    sizes = {f.size for f in frames}
    if len(sizes) != 1:
        raise ValueError(f"video_inputs: frames of different sizes {sorted(sizes)}")
    from vlmflow.adapters.geometry import qwen2_vl_grid

    _, gh, gw = qwen2_vl_grid(frames[0].size, processor)
    arrays = []
    for frame in frames:
        frame = frame.convert("RGB")
        if frame.size != (gw * p, gh * p):
            frame = frame.resize((gw * p, gh * p), resample=ip.resample)
        x = np.asarray(frame, dtype=np.float32).transpose(2, 0, 1) * float(ip.rescale_factor)
        mean = np.asarray(ip.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(ip.image_std, dtype=np.float32)[:, None, None]
        arrays.append((x - mean) / std)
    if frames_per_patch == 1:
        arrays = [a for a in arrays for _ in range(T)]
    while len(arrays) % T:
        arrays.append(arrays[-1])
    x = np.stack(arrays)  # [frames, C, H, W]
    C = x.shape[1]
    gt = x.shape[0] // T
    # the image processor's own patch order: (t, row block, column block, row in block, column in block) outside,
    # (channel, time, y, x) inside each flattened patch
    x = x.reshape(gt, T, C, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = x.reshape(gt * gh * gw, C * T * p * p)
    return {"pixel_values_videos": torch.from_numpy(np.ascontiguousarray(flat)),
            "video_grid_thw": torch.tensor([[gt, gh, gw]])}


def prepare_video(adapter: "Qwen2VLAdapter", videos, questions, frames_per_patch: int = 1):
    """(BatchFeature, TokenRoles with frames) of a left-padded batch of videos (lists of PIL frames), one question
    each: the adapter's prompt with ``<|video_pad|>`` in the image's place, expanded to the video's tokens."""
    import torch
    from transformers import BatchFeature

    from vlmflow.roles import roles_from_segments

    if len(videos) != len(questions):
        raise ValueError(f"{len(videos)} videos but {len(questions)} questions")
    tok = adapter.tokenizer
    video_token = getattr(adapter.processor, "video_token", None) or "<|video_pad|>"
    video_id = int(tok.convert_tokens_to_ids(video_token))
    merge = int(adapter.processor.image_processor.merge_size)
    per_video = [video_inputs(adapter.processor, list(v), frames_per_patch) for v in videos]
    segs, texts, per_frame = [], [], []
    for q, vi in zip(questions, per_video):
        s = [(role, video_token if role == "image" else text) for role, text in adapter.segments(q)]
        t, h, w = (int(v) for v in vi["video_grid_thw"][0])
        n = h * w // merge ** 2
        segs.append(s)
        texts.append("".join(video_token * (t * n) if role == "image" else text for role, text in s))
        per_frame.append(n)
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    finally:
        tok.padding_side = old_side
    ids = enc["input_ids"]
    is_video = ids == video_id
    roles = roles_from_segments(tok, segs, ids, enc["attention_mask"], video_id)
    frames = torch.full_like(ids, -1)
    for b, n in enumerate(per_frame):
        where = is_video[b].nonzero().flatten()
        frames[b, where] = torch.arange(len(where)) // n
    inputs = BatchFeature({
        "input_ids": ids, "attention_mask": enc["attention_mask"],
        "mm_token_type_ids": is_video.to(torch.int32) * 2,  # text 0, image 1, video 2 (get_rope_index)
        "pixel_values_videos": torch.cat([v["pixel_values_videos"] for v in per_video]),
        "video_grid_thw": torch.cat([v["video_grid_thw"] for v in per_video])})
    return inputs, roles.with_frames(frames)

