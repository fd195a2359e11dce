"""Adapter registry: one `Adapter` subclass per architecture, keyed by ``config.model_type``.

``adapter_for(model, processor)`` picks the adapter for a loaded transformers model; ``vlmflow.model.wrap`` and
``load`` use it. Built-in adapters (llava, internvl, qwen2_vl) are imported on first use; a third-party adapter
registers itself with ``@register_adapter`` when its module is imported.
"""
from __future__ import annotations

import importlib

from vlmflow.adapters.base import Adapter, load_image
from vlmflow.errors import UnsupportedModelError

_REGISTRY: dict[str, type[Adapter]] = {}
_BUILTIN = ("vlmflow.adapters.llava", "vlmflow.adapters.internvl", "vlmflow.adapters.qwen2_vl")
_loaded = False


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: serve every ``config.model_type`` in ``cls.model_types`` with ``cls``."""
    if not cls.model_types:
        raise ValueError(f"adapter {cls.__name__} declares no model_types")
    for model_type in cls.model_types:
        _REGISTRY[model_type] = cls
    return cls


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in _BUILTIN:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # an architecture file not shipped: the others still work
            if exc.name != module:
                raise


def supported() -> tuple[str, ...]:
    """The ``config.model_type`` values with an adapter."""
    _load_builtin()
    return tuple(sorted(_REGISTRY))


def adapter_for(model, processor) -> Adapter:
    """The adapter instance for a loaded model + processor; UnsupportedModelError names what is supported."""
    _load_builtin()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = _REGISTRY.get(model_type)
    if cls is None:
        raise UnsupportedModelError(
            f"unsupported architecture {model_type!r} ({type(model).__name__}); "
            f"supported model types: {', '.join(supported())}"
        )
    return cls(model, processor)


def __getattr__(name: str):
    if name == "SUPPORTED":  # computed on access so it reflects adapters registered since import
        return supported()
    raise AttributeError(f"module 'vlmflow.adapters' has no attribute {name!r}")


__all__ = ["Adapter", "SUPPORTED", "adapter_for", "load_image", "register_adapter", "supported"]
