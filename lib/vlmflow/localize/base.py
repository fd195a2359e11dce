"""What every localization module shares: the error class and the default hit tolerances."""
from __future__ import annotations

from vlmflow.errors import VlmflowError

DEFAULT_TOLERANCE_PX = 40.0
DEFAULT_TOLERANCE_TOKENS = 0
ROWS = ("last_prompt", "generated")  # every position that predicts an output token


class LocalizationError(VlmflowError):
    pass
