"""When long work draws a progress bar: on the terminal, yes; in an executed book page, never.

Every tqdm bar of the library passes ``disable=bar_disabled(progress)``. ``progress=False`` (an argument of the
sweep, judge, localization and re-prompting functions) turns one off; the environment variable ``TQDM_DISABLE``
(tqdm's own convention, which tqdm applies only to bars that do not set ``disable`` themselves) turns them all off.
The book pipeline (``vlmflow.book.run_notebook``) sets it for every notebook it executes, so pages show results and
not dozens of bar boxes, while `vlmflow sweep` and friends keep their bars on the terminal.
"""
from __future__ import annotations

import os

ENV = "TQDM_DISABLE"


def bar_disabled(progress: bool = True) -> bool:
    """True when a bar must not draw: the caller asked for none, or ``$TQDM_DISABLE`` is set to a true value."""
    return not progress or os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")
