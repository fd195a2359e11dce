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

Geometry: ``geometry.qwen2_vl_geometry`` from the row's ``image_grid_thw`` (one image per row).
"""
from __future__ import annotations

from vlmflow.adapters import register_adapter
from vlmflow.adapters.base import Adapter

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."


@register_adapter
class Qwen2VLAdapter(Adapter):
    name = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    system_prompt: str = QWEN_DEFAULT_SYSTEM

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
