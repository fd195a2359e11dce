"""Named errors. Every user-facing failure raises a subclass of VlmflowError whose message names the thing at
fault (file, model id, layer index, role name) and what would be valid; the CLI (``vlmflow.cli``) prints it as one
line ``vlmflow: error: ...`` with exit code 2. Any other exception is a bug and keeps its traceback.
``VlmflowWarning`` marks results that are valid but probably not what the user meant (a knockout that blocks nothing
on the given input); the CLI prints it as one line ``vlmflow: warning: ...``."""
from __future__ import annotations


class VlmflowError(Exception):
    """Base class of every error vlmflow raises on bad input."""


class UsageError(VlmflowError, ValueError):
    """An argument value that no command or function can use (a count of 0, an empty question, a file where a
    folder is needed)."""


class DeviceError(VlmflowError):
    """A device that this torch build does not have (``--device cuda`` on a CPU-only torch, ``tpu9``)."""


class VlmflowWarning(UserWarning):
    """A valid request whose result is probably not what was meant; see the module docstring."""


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


def read_user_text(path, what: str, error: type[VlmflowError] = VlmflowError) -> str:
    """The UTF-8 text of a file the user named; ``error`` (naming ``what``, the path and, for bad bytes, the byte
    offset) instead of an OSError or UnicodeDecodeError traceback."""
    import os

    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise error(f"{what} {os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise error(f"{what} {os.fspath(path)} is a folder; give a file") from None
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 1]
        raise error(f"{what} {os.fspath(path)} is not UTF-8 text (byte {bad!r} at offset {exc.start}); "
                    f"save it as UTF-8") from None
    except OSError as exc:
        raise error(f"cannot read {what} {os.fspath(path)}: {exc.strerror or exc}") from None
