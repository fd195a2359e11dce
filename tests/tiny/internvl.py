"""A tiny random HF-native InternVL (``InternVLForConditionalGeneration``, built in code, no download) for unit tests.

Vision: tiles of 16 px, patches of 4 px (4x4 patches), pixel shuffle 0.5 -> 2x2 = 4 image tokens per tile; the real
``GotOcr2ImageProcessor`` (PIL backend) cuts an image into 1-4 tiles (+ a thumbnail when more than one) and
``InternVLProcessor`` expands ``<IMG_CONTEXT>`` to ``<img>`` + 4 x n_tiles ``<IMG_CONTEXT>`` + ``</img>``.
Text: Qwen2 decoder, 4 layers, 4 query heads over 2 key/value heads. WordLevel tokenizer with the InternVL3-hf
special tokens (``<|im_start|>``, ``<|im_end|>``, ``<img>``, ``</img>``, ``<IMG_CONTEXT>``, ``<video>``).

``build(seed=0, **overrides)``: overrides go to the text config, or to the vision config with a ``vision_`` prefix;
``max_patches=`` sets the tile budget; ``chat_template=True`` attaches the InternVL3-hf chat template.
"""
from __future__ import annotations

import copy

from tests.tiny.qwen2_vl import WORDS
from vlmflow.processors import without_video, word_level_tokenizer

SPECIALS = ["<|endoftext|>", "<unk>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]

# The chat template of OpenGVLab/InternVL3-*-hf (transformers' convert_internvl_weights_to_hf.py): no default system
# prompt; an image item renders as "<IMG_CONTEXT>\n".
INTERNVL3_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}"
    "{{ content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{'<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer():
    return word_level_tokenizer(
        SPECIALS, WORDS,
        {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
         "video_token": "<video>"},
        eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build(seed: int = 0, tile_size: int = 16, patch_size: int = 4, max_patches: int = 4,
          chat_template: bool = False, **overrides):
    """-> (InternVLForConditionalGeneration in eval mode, InternVLProcessor); deterministic for a seed."""
    import torch
    from transformers import (
        GotOcr2ImageProcessorPil,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
    )

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    vision_kw = {k[len("vision_"):]: v for k, v in overrides.items() if k.startswith("vision_")}
    text_kw = {k: v for k, v in overrides.items() if not k.startswith("vision_")}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "image_size": [tile_size, tile_size], "patch_size": [patch_size, patch_size], **vision_kw}
    text = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
            "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": len(vocab),
            "max_position_embeddings": 512, "bos_token_id": None, "eos_token_id": vocab["<|im_end|>"],
            "pad_token_id": vocab["<|endoftext|>"], "tie_word_embeddings": False, **text_kw}
    downsample = 0.5
    seq = int((tile_size // patch_size * downsample) ** 2)
    config = InternVLConfig(vision_config=copy.deepcopy(vision), text_config=copy.deepcopy(text),
                            image_token_id=vocab["<IMG_CONTEXT>"], image_seq_length=seq,
                            downsample_ratio=downsample, vision_feature_layer=-1,
                            vision_feature_select_strategy="default", tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = vocab["<|endoftext|>"], vocab["<|im_end|>"], None
    # InternVL3-hf preprocessor_config: GotOcr2ImageProcessor, crop_to_patches false (the processor call turns it
    # on), min_patches 1, max_patches 12, size 448 -- scaled down here.
    image_processor = GotOcr2ImageProcessorPil(size={"height": tile_size, "width": tile_size},
                                               crop_to_patches=False, min_patches=1, max_patches=max_patches)
    processor = without_video(InternVLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, image_seq_length=seq,
        chat_template=INTERNVL3_HF_CHAT_TEMPLATE if chat_template else None)
    return model, processor
