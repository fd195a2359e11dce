"""A sweep's results as tidy table rows: what ``vlmflow.store.ResultStore.write_part`` stores per image.

Where it sits: the engine (``vlmflow.sweep``) returns :class:`~vlmflow.sweep.SweepResult` objects; the driver
(``vlmflow.sweep_run.run_sweep``) turns them into rows here; notebooks read them back with
``vlmflow.store.load_results`` (``"results"``: one row per configuration, ``"attention"``: one row per recorded
position and layer).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vlmflow.knockout import spec_id as knockout_spec_id

if TYPE_CHECKING:
    from vlmflow.sweep import SweepResult


def result_rows(results: Iterable["SweepResult"], **common) -> list[dict]:
    """One tidy row per result: ``common`` columns (image id, ...), the config's labels, spec id and outcome."""
    rows = []
    for r in results:
        row = dict(common)
        row.update(dict(r.config.labels))
        row.update(
            spec_id=r.spec_id, knockout=knockout_spec_id(r.config.knockouts), force_prefix=r.config.force_prefix,
            keep=r.config.keep.spec_id if r.config.keep is not None else "none",
            text=r.text, token_ids=list(r.token_ids), n_tokens=len(r.token_ids), finished=r.finished,
            first_token=r.first_token, baseline_first_token=r.baseline_first_token,
            first_token_matches_baseline=r.first_token_matches_baseline,
        )
        rows.append(row)
    return rows


def attention_rows(results: Iterable["SweepResult"], **common) -> list[dict]:
    """Summaries of recorded attention, one row per (config, recorded position, layer): the attention mass on each
    role (float32) and its uniform share, and the head-averaged image map (float16 list: maps are read as shapes,
    and fp16 keeps 3 significant digits of each weight)."""
    import numpy as np

    from vlmflow.roles import ROLES

    rows = []
    for r in results:
        rec = r.record
        if rec is None:
            continue
        mass = rec.role_mass.float().numpy()  # [R, L, n_roles]
        share = rec.key_share.float().numpy()  # [R, n_roles]
        image = rec.image_map.float()
        if image.ndim == 4:  # heads="all": sweeps keep the head average
            image = image.mean(2)
        image = image.numpy().astype(np.float16)  # [R, L, N]
        for ri, pos in enumerate(rec.row_positions.tolist()):
            for li, layer in enumerate(rec.layers):
                row = dict(common, spec_id=r.spec_id, position=int(pos), token_id=int(rec.row_token_ids[ri]),
                           layer=int(layer))
                for k, role in enumerate(ROLES):
                    row[f"mass_{role}"] = float(mass[ri, li, k])
                    row[f"share_{role}"] = float(share[ri, k])
                row["image_map"] = image[ri, li]
                rows.append(row)
    return rows


__all__ = ["attention_rows", "result_rows"]
