"""The `Adapter` contract: everything vlmflow needs to know about one VLM architecture.

An adapter builds the model's own chat prompt as ``(role, text)`` segments, runs the model's processor on a
left-padded batch, labels every position with a role (``vlmflow.roles.roles_from_segments``), names the decoder whose
attention modules carry ``layer_idx`` (where ``vlmflow.attention`` is installed), and maps image tokens to pixel boxes
(``vlmflow.adapters.geometry``). It also owns the two pieces of template and position knowledge that work past
the first prompt needs: ``followup_turn`` (the text of a second user turn, for re-prompting) and the decoder's
rotary position ids (``decoder_positions`` for a prompt, ``text_position_ids`` for tokens appended after it; M-RoPE
models have ``rope_axes = 3``). ``vlmflow.model.VLM`` talks to models only through this class, and the sweep engine
and re-prompting talk to models only through ``VLM`` and this class; adding an architecture = one subclass
registered with ``@register_adapter`` (see ``vlmflow.adapters``).

Subclasses set ``name``, ``model_types`` and implement ``segments``, ``followup_turn`` and ``geometry``; the rest
has working defaults for transformers 5 ``*ForConditionalGeneration`` models (``model.model.language_model``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from vlmflow.errors import ImageReadError, UnsupportedModelError
from vlmflow.roles import TokenRoles, roles_from_segments

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import BatchFeature

    from vlmflow.adapters.geometry import ImageGeometry


# Sizes an image may have. Below MIN_SIDE px a side holds less than one 14-px vision patch (the patch of every
# supported real model: CLIP ViT-L/14 in LLaVA-1.5, InternViT, Qwen2-VL's ViT), so the model sees upsampled noise.
# Above MAX_PIXELS the processors' resize alone takes gigabytes, while no supported model reads more than Qwen2-VL's
# default max_pixels (12.8 MP); downscale first.
MIN_SIDE = 14
MAX_PIXELS = 50_000_000


def check_image_size(size: tuple[int, int], what: str) -> None:
    """ImageReadError naming ``what`` unless (W, H) ``size`` lies within MIN_SIDE and MAX_PIXELS."""
    w, h = size
    if min(w, h) < MIN_SIDE:
        raise ImageReadError(f"{what} is {w}x{h} px: each side must be at least {MIN_SIDE} px (one vision patch of "
                             f"the supported models)")
    if w * h > MAX_PIXELS:
        raise ImageReadError(f"{what} is {w}x{h} px ({w * h / 1e6:.1f} MP): the limit is {MAX_PIXELS / 1e6:.0f} MP; "
                             f"downscale it first (no supported model reads more than ~13 MP)")


def _array_to_uint8(arr, what: str):
    """An (H, W[, C]) array -> uint8. uint8 as is; other integer types must lie in [0, 255]; floats in [0, 1]
    (a float array in [0, 255] is refused, not clipped to white). Bool, complex and NaN are refused."""
    import numpy as np

    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        hint = " (channels first? use arr.transpose(1, 2, 0))" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise ImageReadError(f"{what} has shape {arr.shape}: expected (H, W) or (H, W, C) with C = 1, 3 or 4{hint}")
    if arr.dtype == np.uint8:
        return arr
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageReadError(f"{what} ({arr.dtype}) has values {lo}..{hi}: integer images must lie in 0..255")
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageReadError(f"{what} ({arr.dtype}) contains NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            fix = "; divide by 255 (or pass uint8)" if hi <= 255.0 and lo >= 0.0 else ""
            raise ImageReadError(f"{what} ({arr.dtype}) has values {lo:g}..{hi:g}: float images must lie in "
                                 f"[0, 1]{fix}")
        return (arr.astype(np.float64) * 255).round().astype(np.uint8)
    raise ImageReadError(f"{what} has dtype {arr.dtype}: pass uint8 (0..255) or float (0..1)")


# the follow-up user turn of chat-ML templates (Qwen2-VL, InternVL3-hf): close the assistant turn, open a user turn
CHATML_FOLLOWUP = "<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


class Video:
    """One video as one model input: its frames in time order (each anything :func:`load_image` reads, all of one
    size). ``VLM.prepare`` lays a ``Video`` out through the adapter's video input (``prepare_video``: Qwen2-VL's
    ``pixel_values_videos``, every video token with its frame in ``TokenRoles.frames``) where a plain image goes
    through ``prepare``; so the sweep engine, re-prompting and generation take a clip wherever they take an image.
    Not a sequence type: a list or tuple given to ``prepare`` is always a batch, a ``Video`` always one input."""

    __slots__ = ("frames",)

    def __init__(self, frames):
        frames = tuple(frames)
        if not frames:
            raise ImageReadError("a Video needs at least one frame")
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)

    def __getitem__(self, index):
        return self.frames[index]

    def __repr__(self) -> str:
        return f"Video({len(self.frames)} frames)"

    def load(self) -> "list[Image.Image]":
        """The frames as PIL RGB images; ImageReadError names a frame of another size."""
        frames = [load_image(f) for f in self.frames]
        sizes = sorted({f.size for f in frames})
        if len(sizes) != 1:
            raise ImageReadError(f"the frames of a Video must have one size, got {sizes}")
        return frames

    @property
    def n_frames(self) -> int:
        return len(self.frames)


def load_image(image: Any) -> "Image.Image":
    """A PIL RGB image from a PIL image, a path (str / PathLike) or an ndarray (H, W[, C], uint8, integers in
    0..255, or float in [0, 1]). ImageReadError names what is wrong: a missing or unreadable file, an array's
    shape, dtype or value range, or a size outside ``MIN_SIDE`` .. ``MAX_PIXELS``."""
    from PIL import Image

    if isinstance(image, Image.Image):
        check_image_size(image.size, "the image")
        return image.convert("RGB")
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if os.path.isdir(path):
            raise ImageReadError(f"image {path} is a folder; give an image file")
        try:
            with Image.open(path) as im:
                check_image_size(im.size, f"image {path}")  # before decoding: a huge file is refused cheaply
                return im.convert("RGB")
        except FileNotFoundError as exc:
            raise ImageReadError(f"image file not found: {path}") from exc
        except ImageReadError:
            raise
        except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for bad files
            why = str(exc).splitlines()[0].strip('"') if str(exc) else type(exc).__name__
            raise ImageReadError(f"cannot read image {path}: {why}") from exc
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency of torch
        np = None
    if np is not None and isinstance(image, np.ndarray):
        arr = _array_to_uint8(image, "image array")
        check_image_size((arr.shape[1], arr.shape[0]), "image array")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        return Image.fromarray(arr).convert("RGB")
    raise ImageReadError(f"cannot read image of type {type(image).__name__}: pass a PIL image, a path or an ndarray")


class Adapter:
    """One VLM architecture. See the module docstring and DEVELOPING.md ("Adapters")."""

    name: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()
    rope_axes: ClassVar[int] = 1  # rotary position axes of the decoder: 1 (RoPE) or 3 (M-RoPE: time, height, width)

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor
        tok = getattr(processor, "tokenizer", None)
        if tok is None:
            raise UnsupportedModelError(f"{self.name} adapter: the processor {type(processor).__name__} has no tokenizer")
        self.tokenizer = tok

    # ---- prompt ---------------------------------------------------------------------------------------------
    def segments(self, question: str) -> list[tuple[str, str]]:
        """The chat prompt as (role, text) pieces; exactly one ``("image", placeholder)`` piece."""
        raise NotImplementedError

    def prompt(self, question: str) -> str:
        return "".join(text for _, text in self.segments(question))

    def followup_turn(self, question: str) -> str:
        """The text that, appended after this adapter's prompt (which ends by handing the turn to the assistant),
        opens a new user turn holding ``question`` and hands the turn back: re-prompting's second turn."""
        raise NotImplementedError

    def processor_kwargs(self) -> dict:
        """Extra keyword arguments for the processor call (architecture specific)."""
        return {}

    def prepare(self, images: Sequence[Any], questions: Sequence[str]) -> tuple["BatchFeature", TokenRoles]:
        """Process a left-padded batch: images (PIL / path / ndarray) and one question per image."""
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images but {len(questions)} questions")
        pil = [load_image(im) for im in images]
        segs = [self.segments(q) for q in questions]
        texts = ["".join(t for _, t in s) for s in segs]
        old_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"  # generation appends on the right; roles assume left padding
        try:
            inputs = self.processor(images=pil, text=texts, padding=True, return_tensors="pt",
                                    **self.processor_kwargs())
        finally:
            self.tokenizer.padding_side = old_side
        roles = roles_from_segments(self.tokenizer, segs, inputs["input_ids"], inputs["attention_mask"],
                                    self.image_token_id)
        return inputs, roles

    # ---- model structure ------------------------------------------------------------------------------------
    def language_model(self):
        """The decoder (nn.Module) whose attention modules carry ``layer_idx``."""
        inner = getattr(self.model, "model", self.model)
        lm = getattr(inner, "language_model", None)
        if lm is None:
            raise UnsupportedModelError(f"{self.name} adapter: {type(self.model).__name__} has no language_model")
        return lm

    @property
    def text_config(self):
        cfg = self.model.config
        return getattr(cfg, "text_config", cfg)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def image_token_id(self) -> int:
        cfg = self.model.config
        for attr in ("image_token_id", "image_token_index"):
            value = getattr(cfg, attr, None)
            if value is not None:
                return int(value)
        raise UnsupportedModelError(f"{self.name} adapter: config of {type(self.model).__name__} has no image_token_id")

    def set_attention(self, name: str) -> None:
        """Route the language model's attention through ``name``; the vision tower keeps its own."""
        self.model.set_attn_implementation({"text_config": name})

    def text_attn_implementation(self) -> str:
        return str(self.text_config._attn_implementation)

    # ---- positions --------------------------------------------------------------------------------------------
    def decoder_positions(self, position_ids: "torch.Tensor | None", length: int, device=None) -> "torch.Tensor":
        """The rotary position ids of a one-row prompt of ``length`` positions as the decoder uses them, from what its
        forward received (``position_ids``, None when the decoder counts them itself): [1, T] for RoPE,
        [rope_axes, 1, T] for M-RoPE. ``VLM.prefill`` captures the input; the model's own code computes it."""
        import torch

        if position_ids is None:
            position_ids = torch.arange(length, device=device)[None]
        if self.rope_axes > 1 and position_ids.ndim == 2:
            position_ids = position_ids[None].expand(self.rope_axes, *position_ids.shape)
        return position_ids

    def text_position_ids(self, start: int, n: int, device=None) -> "torch.Tensor":
        """Position ids of ``n`` text tokens from position ``start`` on, shaped as ``decoder_positions`` ([1, n] or
        [rope_axes, 1, n]: text advances every M-RoPE axis together)."""
        import torch

        ids = torch.arange(int(start), int(start) + n, device=device)[None]
        return ids if self.rope_axes == 1 else ids[None].expand(self.rope_axes, 1, n)

    def geometry(self, image_size: tuple[int, int], inputs: "BatchFeature", row: int) -> "ImageGeometry":
        """Token -> original-pixel boxes for ``row`` of a prepared batch (image_size = (W, H) of the original)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__}, layers={self.num_layers})"
