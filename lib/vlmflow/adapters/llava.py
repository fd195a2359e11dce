"""LLaVA-1.5 adapter (``llava-hf/llava-1.5-7b-hf`` layout, ``config.model_type == "llava"``; also the toy model).

The prompt is the llava_v1 conversation template the paper used::

    {system} USER: <image>\\n{question} ASSISTANT:

Segments: ``system`` = the llava_v1 system prompt; ``user`` = ``" USER: "``; ``image`` = ``"<image>"`` (the processor
expands it to the model's image-token count); ``query`` = ``"\\n" + question``; ``assistant`` = ``" ASSISTANT:"``.
The newline after the image belongs to ``query``: it is the first token after the image block and keeps every role
one contiguous span in the order bos, system, user, image, query, assistant. (The paper's T_txt group is every
non-image prompt position either way.)
"""
from __future__ import annotations

from vlmflow.adapters import register_adapter
from vlmflow.adapters.base import Adapter

LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@register_adapter
class LlavaAdapter(Adapter):
    name = "llava"
    model_types = ("llava",)
    system_prompt = LLAVA_V1_SYSTEM

    @property
    def image_placeholder(self) -> str:
        return getattr(self.processor, "image_token", "<image>")

    def segments(self, question: str) -> list[tuple[str, str]]:
        return [
            ("system", self.system_prompt),
            ("user", " USER: "),
            ("image", self.image_placeholder),
            ("query", "\n" + question),
            ("assistant", " ASSISTANT:"),
        ]

    def followup_turn(self, question: str) -> str:
        """llava_v1's next turn, as the official re-prompting code appends it: ``" USER: {question} ASSISTANT:"``
        (the same tags as the first turn, no ``</s>`` after the empty assistant reply)."""
        return f" USER: {question} ASSISTANT:"

    def geometry(self, image_size, inputs, row):
        from vlmflow.adapters import geometry  # written alongside the other architectures; imported lazily

        return geometry.llava_geometry(image_size, self.processor)
