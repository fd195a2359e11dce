"""Tiny random-weight VLMs built in code (no download), one file per architecture, each exposing
``build(seed=0, **overrides) -> (model, processor)`` with the architecture's real transformers classes.

``build("llava")`` etc. imports lazily so a missing optional architecture never breaks the others."""
from __future__ import annotations

import importlib

BUILDERS = {
    "llava": ("tests.tiny.llava", "build"),
    "internvl": ("tests.tiny.internvl", "build"),
    "qwen2_vl": ("tests.tiny.qwen2_vl", "build"),
    "qwen2_5_vl": ("tests.tiny.qwen2_vl", "build_2_5"),
}


def build(arch: str, **kwargs):
    module, fn = BUILDERS[arch]
    return getattr(importlib.import_module(module), fn)(**kwargs)
