"""Named errors. Every user-facing failure raises a subclass of VlmflowError whose message names the thing at
fault (file, model id, layer index, role name); the CLI prints it as one line."""
from __future__ import annotations


class VlmflowError(Exception):
    """Base class of every error vlmflow raises on bad input."""


class UnknownRoleError(VlmflowError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class LayerIndexError(VlmflowError, IndexError):
    pass


class UnsupportedModelError(VlmflowError):
    pass


class UnsupportedAttentionError(VlmflowError):
    pass


class NoImageTokensError(VlmflowError):
    pass


class ImageReadError(VlmflowError):
    pass


class WeightsNotAvailableError(VlmflowError):
    pass


class DataNotAvailableError(VlmflowError):
    pass
