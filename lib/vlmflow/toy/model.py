"""Build the untrained toy VLM: a real ``LlavaForConditionalGeneration`` (CLIP vision tower + projector + Llama LM),
a word-level tokenizer and a ``LlavaProcessor``, all plain transformers classes so that
``AutoModelForImageTextToText`` / ``AutoProcessor`` (and ``vf.load("toy")`` through the core LLaVA adapter) read the
saved folder offline.

The prompt is the LLaVA-1.5 format, built in one place (``build_prompt``); it must equal the segments the core
LLaVA adapter builds (``adapters/llava.py``): ``"{SYSTEM} USER: <image>\\n{question} ASSISTANT:"``.
The tokenizer is a ``tokenizers`` WordLevel model with a Whitespace pre-tokenizer (words and punctuation runs),
case-sensitive, BOS added by a post-processor; vocabulary = template words + grammar + questions + answers.
``train.py`` trains what ``build`` returns; ``evaluate.py`` evaluates the saved folder.
"""
from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass

from vlmflow.toy.scenes import BACKGROUND

SYSTEM_PROMPT = ("A chat between a curious human and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the human's questions.")
IMAGE_TOKEN = "<image>"
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMAGE_TOKEN)
# Pixel normalisation centred on the toy background (scenes.BACKGROUND), not CLIP's ImageNet statistics: with
# CLIP's, every background patch becomes the same large vector, and at initialisation the image tokens differ
# from each other by ~5% of their norm (projector output variation 0.018 vs text embeddings 0.22), so the LM
# barely sees the image and training sat on a text-only plateau. Centred, a background patch is ~0 and an object
# patch carries its colour and shape at full scale (variation ~100% of the norm at every vision layer).
IMAGE_MEAN = tuple(round(c / 255, 6) for c in BACKGROUND)
IMAGE_STD = (0.3, 0.3, 0.3)


def build_prompt(question: str) -> str:
    """The exact LLaVA-1.5 prompt for one question (one ``<image>`` placeholder, expanded by the processor)."""
    return f"{SYSTEM_PROMPT} USER: {IMAGE_TOKEN}\n{question} ASSISTANT:"


@dataclass(frozen=True)
class ToyModelConfig:
    image_size: int = 128
    patch_size: int = 16  # 8 x 8 image tokens, 2 x 2 under each scene cell (toy/scenes.py)
    vision_hidden: int = 128
    vision_layers: int = 4
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 8
    text_heads: int = 4
    text_intermediate: int = 512
    vision_feature_layer: int = -1
    rope_theta: float = 10000.0  # the language model's rotary base; Qwen2-VL's M-RoPE gives width the slowest share

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def recorded(record: dict) -> dict:
        """A stored ``model_config`` (a checkpoint's, training.json's) in this version's fields, to compare with
        ``to_dict()``: a field newer than the record takes its default, which older models were built with; a field
        this version lacks stays, so the comparison refuses it."""
        return {**asdict(ToyModelConfig()), **record}


TINY = ToyModelConfig(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, vision_heads=2,
                      text_hidden=32, text_layers=2, text_heads=2, text_intermediate=64)


def vocabulary() -> list[str]:
    """Special tokens first (fixed ids 0-4), then every word of the template, grammar, questions and answers."""
    from vlmflow.toy import grammar, questions

    words: list[str] = []
    template = f"{SYSTEM_PROMPT} USER: ASSISTANT:"
    for w in re.findall(r"\w+|[^\w\s]+", template) + grammar.vocabulary() + questions.vocabulary():
        if w not in words and w not in SPECIAL_TOKENS:
            words.append(w)
    return [*SPECIAL_TOKENS, *words]


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        extra_special_tokens={"image_token": IMAGE_TOKEN}, padding_side="left", model_max_length=512)
    return fast


def build_processor(cfg: ToyModelConfig = ToyModelConfig(), tokenizer=None):
    from transformers import CLIPImageProcessor, LlavaProcessor

    tokenizer = tokenizer or build_tokenizer()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": cfg.image_size}, crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=list(IMAGE_MEAN), image_std=list(IMAGE_STD))
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=cfg.patch_size,
                          vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
                          num_additional_image_tokens=1)


def build_config(cfg: ToyModelConfig = ToyModelConfig(), tokenizer=None):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    tokenizer = tokenizer or build_tokenizer()
    vision = CLIPVisionConfig(
        image_size=cfg.image_size, patch_size=cfg.patch_size, hidden_size=cfg.vision_hidden,
        intermediate_size=4 * cfg.vision_hidden, num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads, projection_dim=cfg.vision_hidden)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=cfg.text_intermediate,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        num_key_value_heads=cfg.text_heads, max_position_embeddings=512, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu", vision_feature_select_strategy="default",
        vision_feature_layer=cfg.vision_feature_layer, image_seq_length=cfg.grid ** 2,
        tie_word_embeddings=True)
    config.pad_token_id = tokenizer.pad_token_id
    return config


def build(cfg: ToyModelConfig = ToyModelConfig(), seed: int = 0):
    """(model, processor): an untrained toy LLaVA in float32, deterministic for ``seed``."""
    import torch
    from transformers import LlavaForConditionalGeneration

    processor = build_processor(cfg)
    config = build_config(cfg, processor.tokenizer)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(copy.deepcopy(config))
    gen = model.generation_config
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = (
        processor.tokenizer.bos_token_id, processor.tokenizer.eos_token_id, processor.tokenizer.pad_token_id)
    gen.do_sample = False
    gen.max_new_tokens = 64
    return model, processor
