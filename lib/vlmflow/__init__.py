"""vlmflow: look inside vision-language models the way *What's in the Image?* (Kaduri, Bagon, Dekel, CVPR 2025)
does, on any supported transformers VLM, without patching transformers.

    import vlmflow as vf
    vlm = vf.load("toy")
    ko = vf.Knockout(source="image", target="generated", layers=range(0, 4))
    gen = vlm.generate(image, "describe the image", knockout=ko, max_new_tokens=64)

Public names are imported lazily so that `import vlmflow` stays fast and a CLI command only pays for what it uses.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

from vlmflow import versions as _versions  # noqa: E402  (torch / transformers that cannot work: one-line error)

_versions.check()

_LAZY = {
    "load": "vlmflow.model",
    "wrap": "vlmflow.model",
    "VLM": "vlmflow.model",
    "Generation": "vlmflow.model",
    "Knockout": "vlmflow.knockout",
    "Record": "vlmflow.record",
    "AttentionRecord": "vlmflow.record",
    "TokenRoles": "vlmflow.roles",
    "ROLES": "vlmflow.roles",
    "GROUPS": "vlmflow.roles",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vlmflow' has no attribute {name!r}")


def __dir__():
    return __all__
