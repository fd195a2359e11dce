"""Tiny random Qwen2-VL and Qwen2.5-VL (real transformers classes, built in code, no download) for unit tests.

Vision: patch 4 px, 2x2 merge (one image token per 8x8 resized px), 1-2 blocks; text: Qwen2 decoder with M-RoPE,
4 layers, 4 query heads over 2 key/value heads. A WordLevel tokenizer (Whitespace pre-tokenizer) carries the Qwen chat
special tokens (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``, ``<|image_pad|>``, ...), and the real
``Qwen2VLImageProcessor`` (PIL backend) with ``Qwen2VLProcessor`` / ``Qwen2_5_VLProcessor`` expand
``<|image_pad|>`` to grid_h*grid_w/4 tokens and return ``image_grid_thw`` and ``mm_token_type_ids``.
``min_pixels`` / ``max_pixels`` keep images of 16-64 px at 4-64 image tokens.

``build(seed=0, **overrides)`` / ``build_2_5(...)``: overrides go to the text config, or to the vision config with a
``vision_`` prefix; ``chat_template=True`` attaches the released Qwen2-VL chat template to the processor.
"""
from __future__ import annotations

import copy

from vlmflow.processors import without_video, word_level_tokenizer

SPECIALS = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
            "<|image_pad|>", "<|video_pad|>"]
WORDS = ("system You are a helpful assistant . user describe the image what is in this picture a an red green blue "
         "circle square triangle star small large left right top bottom there are how many objects yes no and of , "
         "? ! 0 1 2 3 4 5 6 7 8 9 cat dog man woman car tree sky sitting on with")

# The chat template of Qwen/Qwen2-VL-7B-Instruct (also Qwen2.5-VL-*-Instruct), as released on the hub.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer():
    return word_level_tokenizer(SPECIALS, WORDS, {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
                                eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _build(version: str, seed: int, chat_template: bool, overrides: dict):
    import torch
    from transformers import Qwen2VLImageProcessorPil

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    vision_kw = {k[len("vision_"):]: v for k, v in overrides.items() if k.startswith("vision_")}
    text_kw = {k: v for k, v in overrides.items() if not k.startswith("vision_")}
    patch, merge = vision_kw.setdefault("patch_size", 4), vision_kw.setdefault("spatial_merge_size", 2)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": len(vocab), "max_position_embeddings": 512,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
            "bos_token_id": None, "eos_token_id": vocab["<|im_end|>"], "pad_token_id": vocab["<|endoftext|>"],
            **text_kw}
    ids = {"image_token_id": vocab["<|image_pad|>"], "video_token_id": vocab["<|video_pad|>"],
           "vision_start_token_id": vocab["<|vision_start|>"], "vision_end_token_id": vocab["<|vision_end|>"]}
    if version == "2":
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers import Qwen2VLProcessor as Processor
        vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2,
                  "temporal_patch_size": 2, **vision_kw}
    else:
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        from transformers import Qwen2_5_VLProcessor as Processor
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 32, "num_heads": 2,
                  "temporal_patch_size": 2, "window_size": 2 * patch * merge, "fullatt_block_indexes": [1],
                  **vision_kw}
    config = Config(text_config=copy.deepcopy(text), vision_config=copy.deepcopy(vision), **ids)
    torch.manual_seed(seed)
    model = Model(config).eval()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = vocab["<|endoftext|>"], vocab["<|im_end|>"], None
    factor = patch * merge
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=merge, temporal_patch_size=vision["temporal_patch_size"],
        size={"shortest_edge": 2 * factor * 2 * factor, "longest_edge": 8 * factor * 8 * factor})
    processor = without_video(Processor)(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                          chat_template=QWEN2_VL_CHAT_TEMPLATE if chat_template else None)
    return model, processor


def build(seed: int = 0, chat_template: bool = False, **overrides):
    """-> (Qwen2VLForConditionalGeneration in eval mode, Qwen2VLProcessor); deterministic for a seed."""
    return _build("2", seed, chat_template, overrides)


def build_2_5(seed: int = 0, chat_template: bool = False, **overrides):
    """-> (Qwen2_5_VLForConditionalGeneration in eval mode, Qwen2_5_VLProcessor); deterministic for a seed."""
    return _build("2.5", seed, chat_template, overrides)
