"""Cost of the knockout sanity checks in ``vlmflow.attention.compile_knockouts`` (a position left with no key to
attend to -> KnockoutError; a spec that blocks nothing -> VlmflowWarning) on a LLaVA-1.5-sized sweep batch: 32 rows
(the `from-layer` knockouts of one image), 32 decoder layers, a 620-token prompt (576 image tokens). Prints the time
per compile with and without the checks and their ratio.

    .venv/bin/python benchmarks/knockout_checks.py

Results (2026-11-29, 2 CPU cores shared with other jobs, 1 torch thread), two runs: 2.5 ms without the checks and
7.6 ms with (ratio=3.07); 3.6 ms and 9.4 ms (ratio=2.64). A sweep batch of this size decodes for seconds, so the
checks cost well under 1% of a sweep.
"""
from __future__ import annotations

import time
import warnings

import torch

from vlmflow import attention
from vlmflow.knockout import Knockout
from vlmflow.roles import ROLE_ID, TokenRoles

ROWS, LAYERS, REPEATS = 32, 32, 20


def main() -> None:
    torch.set_num_threads(1)
    names = ["bos"] + ["system"] * 30 + ["user"] * 3 + ["image"] * 576 + ["query"] * 5 + ["assistant"] * 5
    roles = TokenRoles(torch.tensor([[ROLE_ID[n] for n in names]] * ROWS), len(names))
    per_row = [[Knockout.from_layer("image", ("text", "generated"), r % (LAYERS + 1) - 1, LAYERS)]
               for r in range(ROWS)]
    checks = attention.check_rows_keep_a_key, attention.warn_inert

    def seconds(with_checks: bool) -> float:
        if not with_checks:
            attention.check_rows_keep_a_key = attention.warn_inert = lambda *a: None
        try:
            attention.compile_knockouts(per_row, ROWS, LAYERS, roles)  # warm-up
            start = time.perf_counter()
            for _ in range(REPEATS):
                attention.compile_knockouts(per_row, ROWS, LAYERS, roles)
            return (time.perf_counter() - start) / REPEATS
        finally:
            attention.check_rows_keep_a_key, attention.warn_inert = checks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base, checked = seconds(False), seconds(True)
    print(f"compile_knockouts per batch ({ROWS} rows, {LAYERS} layers, {len(names)} positions): "
          f"{base * 1e3:.1f} ms without the checks, {checked * 1e3:.1f} ms with; ratio={checked / base:.2f}")


if __name__ == "__main__":
    main()
