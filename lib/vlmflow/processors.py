"""Processors built and loaded without the parts this environment lacks (the one place for it).

transformers 5.24 gives the Qwen2-VL, Qwen2.5-VL and InternVL processors a video processor that needs torchvision,
which cannot be installed next to the pinned CPU torch (see the toolchain notes). Images never use it, but the
processor classes type-check it at construction, ``save_pretrained`` walks it, and ``AutoProcessor.from_pretrained``
refuses a folder that has no ``video_preprocessor_config.json``. :func:`without_video` is the processor class minus
that one attribute; :func:`load_processor` is ``AutoProcessor.from_pretrained`` that falls back to it. Video input
for Qwen2-VL is built directly from its image processor (``adapters.qwen2_vl.video_inputs``).

:func:`word_level_tokenizer` builds the WordLevel tokenizers of the tiny test models (``tests/tiny``) and of the toy
InternVL / Qwen2-VL (``toy/architectures.py``): a fixed vocabulary, the chat special tokens registered as special.
``vlmflow.model.load`` uses :func:`load_processor`.
"""
from __future__ import annotations

import json
import os
import re


def without_video(processor_cls):
    """``processor_cls`` accepting ``video_processor=None`` and saving / loading without one (images only).

    Two changes, nothing else: the constructor's class check is skipped for a None video processor (transformers
    cannot even look up the class it checks against without torchvision), and ``get_attributes`` leaves the video
    processor out, so ``save_pretrained`` writes and ``from_pretrained`` reads the tokenizer and image processor
    only."""
    if getattr(processor_cls, "_vlmflow_without_video", False):
        return processor_cls

    class ImageOnly(processor_cls):
        _vlmflow_without_video = True

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and "video" in argument_name:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

        @classmethod
        def get_attributes(cls):
            return [a for a in processor_cls.get_attributes() if "video" not in a]

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_cls.__name__
    return ImageOnly


def load_processor(source: str, local_files_only: bool = False):
    """``AutoProcessor.from_pretrained(source)``; when that fails only because the video processor cannot be loaded
    (no torchvision, or a folder saved without one), the folder's own processor class without video."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
    except OSError as exc:
        if "video processor" not in str(exc):
            raise
        cls = _processor_class(source)
        if cls is None:
            raise
        return without_video(cls).from_pretrained(source, local_files_only=local_files_only)


def _processor_class(source: str):
    """The processor class named in a local folder's ``processor_config.json`` (None when there is none)."""
    import transformers

    path = os.path.join(source, "processor_config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        name = json.load(f).get("processor_class")
    return getattr(transformers, name, None) if name else None


def word_level_tokenizer(specials: list[str], words: str | list[str], extra_special_tokens: dict[str, str],
                         **special_kw):
    """A PreTrainedTokenizerFast over a WordLevel vocabulary: ``specials`` first (ids 0..), then ``words`` as the
    Whitespace pre-tokenizer splits them (a list is taken word by word); the specials are registered as special
    (never split) tokens. Left padding, as the adapters batch prompts."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(specials)}
    for word in (re.findall(r"\w+|[^\w\s]+", words) if isinstance(words, str) else words):
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", extra_special_tokens=extra_special_tokens,
                                   **special_kw)
    fast.add_special_tokens({"additional_special_tokens": [s for s in specials if s != "<unk>"]})
    fast.padding_side = "left"
    return fast
