"""The toy model in three architectures: LLaVA (``toy/model.py``), InternVL and Qwen2-VL, each built from
transformers' own classes, and the small interface through which ``train.py`` trains any of them.

- ``internvl``: ``InternVLForConditionalGeneration`` (InternViT-style tower with a CLS token, pixel shuffle 0.5, the
  LayerNorm-MLP projector, a Qwen2 decoder), ``GotOcr2ImageProcessor`` with one 128-px tile and no thumbnail
  (``max_patches=1``), ``InternVLProcessor`` expanding ``<IMG_CONTEXT>`` to ``<img>`` + 64 tokens + ``</img>``.
- ``qwen2-vl``: ``Qwen2VLForConditionalGeneration`` (3D patch embedding with temporal patches of 2, the 2x2 patch
  merger, M-RoPE), ``Qwen2VLImageProcessor`` with ``min_pixels = max_pixels = 128^2`` (no resize),
  ``Qwen2VLProcessor`` expanding ``<|image_pad|>`` to 64 tokens and returning ``image_grid_thw`` and
  ``mm_token_type_ids``.

Every architecture gives a 128-px image 8 x 8 image tokens of 16 x 16 px (``ToyModelConfig.patch_size`` is the side
of one image token in pixels: the CLIP patch for LLaVA; a vision patch of half that, merged 2 x 2, for InternVL's
pixel shuffle and Qwen2-VL's merger), so every scene cell lies under 2 x 2 image tokens in all three, and the
tokens enter the sequence row-major (checked against ``adapters/geometry.py`` in tests/unit/test_toy_architectures.py).
The vocabulary is the toy world's (``toy.model.vocabulary``, plus the clip words of ``toy.clips``) with each
architecture's chat special tokens; pixels are normalised around the toy background (``toy.model.IMAGE_MEAN/STD``).

The prompt is the core adapter's (``adapters/internvl.py``, ``adapters/qwen2_vl.py``): training and inference
through ``vf.load(folder)`` read the same tokens. ``ToyArch`` is what ``train.py`` asks of an architecture:
``build``, ``prompt``, ``image_inputs`` (what the image processor returns), ``batch_extras`` (the sequence-aligned
inputs the model needs besides ids and mask: Qwen2-VL's ``mm_token_type_ids`` and its M-RoPE ``position_ids``, computed
on the full context so that the context curriculum, which only masks, never moves a position), ``vision_parameters``,
``image_features`` (stage 1), ``tap`` (the projector output in sequence order, for the token probe) and
``system_span`` (the positions the context curriculum hides).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from vlmflow.errors import VlmflowError
from vlmflow.toy.model import IMAGE_MEAN, IMAGE_STD, SPECIAL_TOKENS, ToyModelConfig

if TYPE_CHECKING:
    pass

ARCHES = ("llava", "internvl", "qwen2-vl")
DEFAULT = ToyModelConfig()
SEQUENCE_KEYS = ("mm_token_type_ids",)  # [B, T] inputs cut with the ids when a prefix is shared


class UnknownArchitectureError(VlmflowError):
    pass


class ToyArch:
    """The LLaVA toy (``toy/model.py``): the reference behaviour that the other architectures override."""

    name = "llava"

    def build(self, cfg: ToyModelConfig = DEFAULT, seed: int = 0):
        from vlmflow.toy.model import build

        return build(cfg, seed=seed)

    def prompt(self, processor, question: str) -> str:
        from vlmflow.toy.model import build_prompt

        return build_prompt(question)

    def image_side(self, processor) -> int:
        return int(processor.image_processor.crop_size["height"])

    def image_inputs(self, processor, images) -> dict:
        return {"pixel_values": processor.image_processor(images, return_tensors="pt")["pixel_values"]}

    def batch_extras(self, model, input_ids, attention_mask, image_inputs) -> dict:
        return {}

    def vision_parameters(self, model) -> list:
        return [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]

    def image_features(self, model, image_inputs) -> None:
        mc = model.config
        model.model.get_image_features(pixel_values=image_inputs["pixel_values"],
                                       vision_feature_layer=mc.vision_feature_layer,
                                       vision_feature_select_strategy=mc.vision_feature_select_strategy)

    def tap(self, model, tokens_per_image: int):
        """The projector output as the LM receives it, [B, N, hidden] in sequence order (the token probe's input)."""
        from vlmflow.toy.probe import ProjectorTap

        return ProjectorTap(model)

    def system_span(self, processor) -> slice | None:
        """Positions the context curriculum hides as the system prompt (None: ``hidden_context``'s LLaVA default)."""
        return None


class InternVLArch(ToyArch):
    name = "internvl"
    special_tokens = ("<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                      "<video>")

    def tokenizer(self):
        from vlmflow.processors import word_level_tokenizer

        return word_level_tokenizer(
            list(self.special_tokens), toy_words("user assistant"),
            {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"},
            eos_token="<|im_end|>", pad_token="<|endoftext|>")

    def build(self, cfg: ToyModelConfig = DEFAULT, seed: int = 0):
        import torch
        from transformers import (
            GotOcr2ImageProcessorPil,
            InternVLConfig,
            InternVLForConditionalGeneration,
            InternVLProcessor,
        )

        from vlmflow.processors import without_video

        tokenizer = self.tokenizer()
        vocab = tokenizer.get_vocab()
        patch = vision_patch(cfg)
        vision = {"hidden_size": cfg.vision_hidden, "intermediate_size": 4 * cfg.vision_hidden,
                  "num_hidden_layers": cfg.vision_layers, "num_attention_heads": cfg.vision_heads,
                  "image_size": [cfg.image_size, cfg.image_size], "patch_size": [patch, patch]}
        text = {"model_type": "qwen2", **_text_config(cfg, tokenizer)}
        config = InternVLConfig(vision_config=copy.deepcopy(vision), text_config=copy.deepcopy(text),
                                image_token_id=vocab["<IMG_CONTEXT>"], image_seq_length=cfg.grid ** 2,
                                downsample_ratio=0.5, vision_feature_layer=cfg.vision_feature_layer,
                                vision_feature_select_strategy="default", projector_hidden_act="gelu",
                                tie_word_embeddings=True)
        torch.manual_seed(seed)
        model = InternVLForConditionalGeneration(config)
        _generation_defaults(model, tokenizer)
        image_processor = GotOcr2ImageProcessorPil(
            size={"height": cfg.image_size, "width": cfg.image_size}, crop_to_patches=False, min_patches=1,
            max_patches=1, image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD))
        processor = without_video(InternVLProcessor)(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
            image_seq_length=cfg.grid ** 2)
        return model, processor

    def prompt(self, processor, question: str) -> str:
        from vlmflow.adapters.internvl import InternVLAdapter

        return InternVLAdapter(None, processor).prompt(question)

    def image_side(self, processor) -> int:
        return int(processor.image_processor.size["height"])

    def image_inputs(self, processor, images) -> dict:
        # the processor's own call turns crop_to_patches on; with max_patches=1 that is one tile and no thumbnail
        out = processor.image_processor(images, crop_to_patches=True, min_patches=1, max_patches=1,
                                        return_tensors="pt")
        return {"pixel_values": out["pixel_values"]}

    def system_span(self, processor) -> slice:
        return slice(0, 0)  # the InternVL3-hf template has no system prompt


class Qwen2VLArch(ToyArch):
    name = "qwen2-vl"
    special_tokens = ("<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                      "<|image_pad|>", "<|video_pad|>")

    def tokenizer(self):
        from vlmflow.adapters.qwen2_vl import QWEN_DEFAULT_SYSTEM
        from vlmflow.processors import word_level_tokenizer

        return word_level_tokenizer(
            list(self.special_tokens), toy_words(f"system {QWEN_DEFAULT_SYSTEM} user assistant"),
            {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
            eos_token="<|im_end|>", pad_token="<|endoftext|>")

    def build(self, cfg: ToyModelConfig = DEFAULT, seed: int = 0):
        import torch
        from transformers import (
            Qwen2VLConfig,
            Qwen2VLForConditionalGeneration,
            Qwen2VLImageProcessorPil,
            Qwen2VLProcessor,
        )

        from vlmflow.processors import without_video

        tokenizer = self.tokenizer()
        vocab = tokenizer.get_vocab()
        patch = vision_patch(cfg)
        text = _text_config(cfg, tokenizer)
        half = cfg.text_hidden // cfg.text_heads // 2  # rotary frequencies per head, split time / height / width
        t = half // 4
        text["rope_parameters"]["mrope_section"] = [t, (half - t) // 2, half - t - (half - t) // 2]
        vision = {"depth": cfg.vision_layers, "embed_dim": cfg.vision_hidden, "hidden_size": cfg.text_hidden,
                  "num_heads": cfg.vision_heads, "mlp_ratio": 4, "patch_size": patch, "spatial_merge_size": 2,
                  "temporal_patch_size": 2}
        config = Qwen2VLConfig(text_config=copy.deepcopy(text), vision_config=copy.deepcopy(vision),
                               image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
                               vision_start_token_id=vocab["<|vision_start|>"],
                               vision_end_token_id=vocab["<|vision_end|>"], tie_word_embeddings=True)
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config)
        _generation_defaults(model, tokenizer)
        pixels = cfg.image_size ** 2
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=patch, merge_size=2, temporal_patch_size=2,
            size={"shortest_edge": pixels, "longest_edge": pixels}, image_mean=list(IMAGE_MEAN),
            image_std=list(IMAGE_STD))
        processor = without_video(Qwen2VLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                                    video_processor=None)
        return model, processor

    def prompt(self, processor, question: str) -> str:
        from vlmflow.adapters.qwen2_vl import Qwen2VLAdapter

        return Qwen2VLAdapter(None, processor).prompt(question)

    def image_side(self, processor) -> int:
        import math

        return math.isqrt(int(processor.image_processor.size["longest_edge"]))

    def image_inputs(self, processor, images) -> dict:
        out = processor.image_processor(images, return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def batch_extras(self, model, input_ids, attention_mask, image_inputs) -> dict:
        """``mm_token_type_ids`` (1 at image tokens) and the M-RoPE ``position_ids`` [3, B, T] of the full context,
        from the model's own ``get_rope_index``: passed explicitly, they stay what they are when the context
        curriculum masks positions or when a shared prefix runs apart (the model would otherwise recount them from
        the attention mask and the ids it is given)."""
        import torch

        types = (input_ids == model.config.image_token_id).to(torch.int32)
        with torch.no_grad():
            positions, _ = model.model.get_rope_index(input_ids, mm_token_type_ids=types,
                                                      image_grid_thw=image_inputs["image_grid_thw"],
                                                      attention_mask=attention_mask)
        return {"mm_token_type_ids": types, "position_ids": positions}

    def vision_parameters(self, model) -> list:
        return [*model.model.visual.parameters()]  # the merger (the projector) is part of the visual module

    def image_features(self, model, image_inputs) -> None:
        model.model.get_image_features(pixel_values=image_inputs["pixel_values"],
                                       image_grid_thw=image_inputs["image_grid_thw"])

    def tap(self, model, tokens_per_image: int):
        from vlmflow.toy.probe import ProjectorTap

        # the merger returns the tokens of the whole batch as one [B * N, hidden] matrix
        return ProjectorTap(model, module=model.model.visual.merger, tokens_per_image=tokens_per_image)

    def system_span(self, processor) -> slice:
        """The system turn after its first token (``<|im_start|>``, kept as the attention sink that BOS is for
        LLaVA): ``system You are a helpful assistant . <|im_end|>``."""
        from vlmflow.adapters.qwen2_vl import Qwen2VLAdapter

        segments = Qwen2VLAdapter(None, processor).segments("")
        n = len(processor.tokenizer(segments[0][1], add_special_tokens=False)["input_ids"])
        return slice(1, n)


_ARCHES = {a.name: a for a in (ToyArch(), InternVLArch(), Qwen2VLArch())}


def get_arch(name: str) -> ToyArch:
    """The toy architecture called ``name`` (one of ``ARCHES``)."""
    arch = _ARCHES.get(name)
    if arch is None:
        raise UnknownArchitectureError(f"unknown toy architecture {name!r}; choose one of {', '.join(ARCHES)}")
    return arch


def set_rope_theta(model, theta: float) -> None:
    """Give a built or loaded toy's language model the rotary base ``theta`` (``ToyModelConfig.rope_theta``): the
    text config, which the export saves, and the rotary embedding computed from it. ``train.initial_model`` calls it
    on a continued run's loaded weights (``--init FOLDER --rope-theta``); a new model is built with its base."""
    text = model.config.get_text_config()
    if text.rope_parameters.get("rope_theta") == theta:
        return
    text.rope_parameters = {**text.rope_parameters, "rope_theta": theta}
    lm = model.model.language_model
    lm.rotary_emb = type(lm.rotary_emb)(config=text).to(lm.rotary_emb.inv_freq.device)


def vision_patch(cfg: ToyModelConfig) -> int:
    """The vision patch of InternVL and Qwen2-VL: half an image token's side (2 x 2 patches merge into one token)."""
    if cfg.patch_size % 2:
        raise UnknownArchitectureError(f"an image token of {cfg.patch_size} px cannot be cut into 2 x 2 patches")
    return cfg.patch_size // 2


def toy_words(template: str) -> list[str]:
    """The toy world's words (scenes, questions, clips) after the words of a chat ``template``."""
    import re

    from vlmflow.toy import clips
    from vlmflow.toy.model import vocabulary

    words = re.findall(r"\w+|[^\w\s]+", template)
    for w in [*vocabulary(), *clips.vocabulary()]:
        if w not in SPECIAL_TOKENS and w not in words:
            words.append(w)
    return words


def _text_config(cfg: ToyModelConfig, tokenizer) -> dict:
    return {"hidden_size": cfg.text_hidden, "intermediate_size": cfg.text_intermediate,
            "num_hidden_layers": cfg.text_layers, "num_attention_heads": cfg.text_heads,
            "num_key_value_heads": cfg.text_heads, "vocab_size": len(tokenizer), "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
            "tie_word_embeddings": True}


def _generation_defaults(model, tokenizer) -> None:
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = None, tokenizer.eos_token_id, tokenizer.pad_token_id
    gen.do_sample = False
    gen.max_new_tokens = 64


def split_extras(batch: dict, P: int) -> "tuple[dict, dict]":
    """(prefix kwargs, rest kwargs) of the inputs besides ids, mask and pixels when positions ``< P`` run once
    for the batch (``train.forward_loss``'s shared prefix): sequence-aligned inputs are cut at ``P`` (the prefix
    from row 0), image inputs go with the rest. Empty for LLaVA."""
    prefix, rest = {}, {}
    for key, value in batch.items():
        if key in ("input_ids", "attention_mask", "pixel_values"):
            continue
        if key == "position_ids":  # [3, B, T] (M-RoPE)
            prefix[key], rest[key] = value[:, :1, :P], value[:, :, P:]
        elif key in SEQUENCE_KEYS:
            prefix[key], rest[key] = value[:1, :P], value[:, P:]
        else:
            rest[key] = value
    return prefix, rest



# ---- model card (toy/evaluate.py write_model_card) ------------------------------------------------------------------

def architecture_card(cfg: dict, total_mb: float) -> str:
    """The model card's architecture lines, from the saved ``config.json`` (``cfg``) of any of the three toys."""
    v, t = cfg["vision_config"], cfg["text_config"]
    weights = f"- Weights in float16 safetensors ({total_mb:.2f} MB for the whole folder); load in float32 on CPU."
    kind = cfg.get("model_type")
    if kind == "llava":
        g = v["image_size"] // v["patch_size"]
        return "\n".join([
            f"- Vision tower: CLIP, {v['image_size']} px input, {v['patch_size']} px patches -> {g}x{g} = {g * g} "
            f"image tokens,",
            f"  {v['num_hidden_layers']} layers, width {v['hidden_size']}; `vision_feature_layer` "
            f"{cfg.get('vision_feature_layer')}, strategy `{cfg.get('vision_feature_select_strategy')}` (CLS dropped).",
            f"- Projector: 2-layer MLP (gelu). Language model: Llama, {t['num_hidden_layers']} layers, width "
            f"{t['hidden_size']},",
            f"  {t['num_attention_heads']} heads, vocabulary {t['vocab_size']} words (word-level tokenizer, `<image>` "
            f"special token).",
            "- Prompt (LLaVA-1.5): `{system} USER: <image>\\n{question} ASSISTANT:` with the llava_v1 system prompt; "
            "the description",
            "  query is `describe the image`; answers end with `</s>`. Greedy decoding.",
            weights])
    lm = (f"Qwen2 decoder, {t['num_hidden_layers']} layers, width {t['hidden_size']}, {t['num_attention_heads']} "
          f"heads, vocabulary {t['vocab_size']} words (word-level tokenizer with the chat special tokens)")
    if kind == "internvl":
        side, patch = v["image_size"][0], v["patch_size"][0]
        g = int(side // patch * cfg.get("downsample_ratio", 0.5))
        return "\n".join([
            f"- Vision tower: InternViT-style, one {side} px tile (no thumbnail), {patch} px patches, pixel shuffle "
            f"{cfg.get('downsample_ratio')} -> {g}x{g} = {g * g} image tokens, {v['num_hidden_layers']} layers, width "
            f"{v['hidden_size']} (CLS dropped).",
            f"- Projector: LayerNorm + 2-layer MLP (gelu). Language model: {lm}.",
            "- Prompt (InternVL3-hf chat template, no system prompt): `<|im_start|>user\\n<IMG_CONTEXT>\\n{question}"
            "<|im_end|>\\n<|im_start|>assistant\\n`; answers end with `<|im_end|>`. Greedy decoding.",
            weights])
    if kind == "qwen2_vl":
        m = v["spatial_merge_size"]
        return "\n".join([
            f"- Vision tower: Qwen2-VL ViT, {v['patch_size']} px patches, temporal patches of "
            f"{v['temporal_patch_size']} frames, {m}x{m} patch merger -> one image token per {v['patch_size'] * m} px "
            f"square, {v['depth']} layers, width {v['embed_dim']}; 2D rotary positions in the tower, M-RoPE "
            f"(sections {t.get('rope_parameters', {}).get('mrope_section')}) in the decoder.",
            f"- Projector: the patch merger (2-layer MLP). Language model: {lm}.",
            "- Prompt (Qwen2-VL chat template, default system prompt): `<|im_start|>system\\nYou are a helpful "
            "assistant.<|im_end|>\\n<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>{question}"
            "<|im_end|>\\n<|im_start|>assistant\\n` (clips: `<|video_pad|>`); answers end with `<|im_end|>`.",
            weights])
    raise UnknownArchitectureError(f"no model card text for model_type {kind!r}")
