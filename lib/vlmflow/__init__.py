"""vlmflow: look inside vision-language models the way *What's in the Image?* (Kaduri, Bagon, Dekel, CVPR 2025)
does, on any supported transformers VLM, without patching transformers.

    import vlmflow as vf
    vlm = vf.load("toy")
    ko = vf.Knockout(source="image", target="generated", layers=range(0, 4))
    gen = vlm.generate(image, "describe the image", knockout=ko, record=vf.Record(), max_new_tokens=64)
    gen.heatmap(token=0, layer=3)                       # float[H, W] attention over the original image
    table = vf.sweep(vlm, "toy-test", preset="from-layer", n_images=10, out="results/my-sweep")

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
    "Video": "vlmflow.adapters.base",
}
# ``vf.sweep`` is the module ``vlmflow.sweep`` itself, callable as ``vf.sweep(vlm, data, preset=..., out=...)``: a
# plain function of that name would be replaced by the module as soon as anything imports ``vlmflow.sweep``
_MODULES = ("sweep",)

__all__ = sorted([*_LAZY, *_MODULES]) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _MODULES:
        return importlib.import_module(f"vlmflow.{name}")
    raise AttributeError(f"module 'vlmflow' has no attribute {name!r}")


def __dir__():
    return __all__
