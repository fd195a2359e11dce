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
