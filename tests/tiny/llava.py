"""A tiny random LLaVA (real transformers classes, built in code, no download) for unit tests.

CLIP vision tower (32 px images, 8 px patches -> 16 image tokens with the "default" feature strategy that drops CLS),
Llama text model (4 layers, 4 query heads over 2 key/value heads so GQA paths are exercised), a WordLevel tokenizer
whose vocabulary covers the llava_v1 prompt, with a BOS post-processor and an ``<image>`` special token, a
CLIPImageProcessor and a LlavaProcessor. ``build(seed=0, **overrides)``: overrides go to the text config
(e.g. ``num_hidden_layers=6``), or to the vision config with a ``vision_`` prefix, or ``image_size=`` for both.
"""
from __future__ import annotations

import copy
import re

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_WORDS = (
    _SYSTEM + " USER : ASSISTANT describe the image what is in this picture a an red green blue circle square "
    "triangle star small large left right top bottom there are how many objects yes no and of , . ? ! 0 1 2 3 4 5 "
    "6 7 8 9 cat dog man woman car tree sky sitting on with"
)


def vocabulary() -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word in re.findall(r"\w+|[^\w\s]+", _WORDS):  # the Whitespace pre-tokenizer's split
        vocab.setdefault(word, len(vocab))
    return vocab


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = vocabulary()
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    fast.padding_side = "left"
    return fast


def build(seed: int = 0, image_size: int = 32, patch_size: int = 8, **overrides):
    """-> (LlavaForConditionalGeneration in eval mode, LlavaProcessor); deterministic for a seed."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    vision_kw = {k[len("vision_"):]: v for k, v in overrides.items() if k.startswith("vision_")}
    text_kw = {k: v for k, v in overrides.items() if not k.startswith("vision_")}
    vision = CLIPVisionConfig(**{
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "image_size": image_size, "patch_size": patch_size, "projection_dim": 32, **vision_kw})
    text = LlamaConfig(**{
        "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": len(vocab), "max_position_embeddings": 256,
        "bos_token_id": vocab["<s>"], "eos_token_id": vocab["</s>"], "pad_token_id": vocab["<pad>"], **text_kw})
    config = LlavaConfig(vision_config=copy.deepcopy(vision), text_config=copy.deepcopy(text),
                         image_token_id=vocab["<image>"], vision_feature_select_strategy="default",
                         vision_feature_layer=-2, pad_token_id=vocab["<pad>"])
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["</s>"]
    model.generation_config.bos_token_id = vocab["<s>"]
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
                               vision_feature_select_strategy="default", image_token="<image>",
                               num_additional_image_tokens=1)
    return model, processor
