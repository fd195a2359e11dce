"""InternVL adapter: HF-native ``InternVLForConditionalGeneration`` (``OpenGVLab/InternVL3-*-hf``; model_type
``"internvl"``). The original remote-code InternVL2/2.5/3 checkpoints are a different class and are not served.

Prompt = the InternVL3-hf chat template (transformers' ``convert_internvl_weights_to_hf.py``) for one user turn
holding an image then the question::

    <|im_start|>user\\n<IMG_CONTEXT>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

That template has no default system prompt, so there is no ``system`` segment unless ``system_prompt`` is set on
the adapter (then ``<|im_start|>system\\n{system_prompt}<|im_end|>\\n`` comes first, as the template renders a
system message; the remote-code InternVL3 always used its Chinese system prompt, the -hf template does not).
Segments: ``user`` = ``<|im_start|>user\\n``; ``image`` = ``<IMG_CONTEXT>``, which the processor expands to
``<img>`` + 256 x n_tiles ``<IMG_CONTEXT>`` + ``</img>`` (the two markers get the ``user`` role); ``query`` =
``"\\n" + question`` (the newline after the image belongs to the query, as for LLaVA-1.5, so each role is one
span); ``assistant`` = ``<|im_end|>\\n<|im_start|>assistant\\n``.

Geometry: dynamic 448-px tiles + thumbnail (``geometry.internvl_geometry``); one block per tile and one for the
thumbnail, in the order the processor emits them.
"""
from __future__ import annotations

from vlmflow.adapters import register_adapter
from vlmflow.adapters.base import CHATML_FOLLOWUP, Adapter


@register_adapter
class InternVLAdapter(Adapter):
    name = "internvl"
    model_types = ("internvl",)
    system_prompt: str | None = None

    @property
    def image_placeholder(self) -> str:
        token = getattr(self.processor, "image_token", None) or getattr(self.tokenizer, "context_image_token", None)
        return token or "<IMG_CONTEXT>"

    def segments(self, question: str) -> list[tuple[str, str]]:
        segs = []
        if self.system_prompt:
            segs.append(("system", f"<|im_start|>system\n{self.system_prompt}<|im_end|>\n"))
        segs += [
            ("user", "<|im_start|>user\n"),
            ("image", self.image_placeholder),
            ("query", "\n" + question),
            ("assistant", "<|im_end|>\n<|im_start|>assistant\n"),
        ]
        return segs

    def followup_turn(self, question: str) -> str:
        """The chat template's next user turn after an empty assistant reply (``CHATML_FOLLOWUP``)."""
        return CHATML_FOLLOWUP.format(question=question)

    def geometry(self, image_size, inputs, row):
        from vlmflow.adapters.geometry import GeometryError, internvl_geometry

        geo = internvl_geometry(image_size, self.processor, self.model.config)
        if inputs is not None and "input_ids" in inputs:
            n = int((inputs["input_ids"][row] == self.image_token_id).sum())
            if n != geo.n_tokens:
                raise GeometryError(
                    f"internvl: row {row} holds {n} image tokens but an image of size {tuple(image_size)} gives "
                    f"{geo.n_tokens} ({geo.method}); was it processed with other min/max_patches?")
        return geo
