"""Attention over the generation steps (the paper's third next check): is the pattern stable from the first generated
token to the last?

Where it sits: a baseline sweep row records, for every position that predicts an output token, the attention mass
per role and the image map per layer (``vlmflow.sweep.attention_rows``). The paper pools every step; this module
keeps them apart, for the notebook ``generation_steps``:

- :func:`step_rows`: per (item, step, layer) the mass on the paper's three groups, the image map's cosine similarity
  to the previous step's, and the step's relative place in its description (0 = first, 1 = last);
- :func:`object_focus`: for steps that predict a naming token, the share of the image attention on the named object
  against its share of the image tokens (``vlmflow.complexity.localization_rows``);
- :func:`position_configs` / :func:`position_effect`: the knockout effect per output position, with the first k
  tokens forced to the baseline's so that position k is the first one decided under the knockout (free decoding
  would mix in the drift of every earlier changed token);
- :func:`early_late`: a per-image value of early steps (first third) and late steps (last third), for the
  stable-or-drifting criterion.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from vlmflow.errors import VlmflowError

if TYPE_CHECKING:
    import pandas as pd

GROUP_ROLES = {"image": ("image",), "text": ("bos", "system", "user", "query", "assistant"), "generated": ("generated",)}


class StepsError(VlmflowError):
    pass


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def step_rows(att: "pd.DataFrame", key: str = "item") -> "pd.DataFrame":
    """Per (``key``, step, layer): ``step`` (0 = the last prompt position, which predicts the first token),
    ``rel_step`` (step / last step), ``mass_<group>`` for image / text / generated and ``sim_prev`` (cosine of the
    image map with the previous step's, NaN at step 0). ``att``: attention rows of baseline generations."""
    import pandas as pd

    need = {key, "position", "layer", "image_map"}
    if not need <= set(att.columns):
        raise StepsError(f"attention rows need columns {sorted(need)}; got {sorted(att.columns)}")
    out = []
    for k, g in att.groupby(key, sort=False):
        g = g.sort_values(["position", "layer"])
        first, last = int(g.position.min()), int(g.position.max())
        maps = {(int(p), int(layer)): np.asarray(m, dtype=float) for p, layer, m in zip(g.position, g.layer,
                                                                                      g.image_map)}
        for r in g.itertuples():
            step = int(r.position) - first
            prev = maps.get((int(r.position) - 1, int(r.layer)))
            row = {key: k, "step": step, "rel_step": step / (last - first) if last > first else 0.0,
                   "layer": int(r.layer),
                   "sim_prev": _cosine(maps[(int(r.position), int(r.layer))], prev) if prev is not None else np.nan}
            for group, roles in GROUP_ROLES.items():
                row[f"mass_{group}"] = float(sum(getattr(r, f"mass_{role}") for role in roles))
            out.append(row)
    return pd.DataFrame(out)


def early_late(steps: "pd.DataFrame", value: str, key: str = "item", cluster: str = "image") -> "pd.DataFrame":
    """Per ``key``: mean ``value`` over its early steps (rel_step < 1/3) and late steps (rel_step > 2/3) and
    ``late - early``; descriptions of fewer than 3 steps have no early and late third and are left out."""
    import pandas as pd

    rows = []
    for k, g in steps.dropna(subset=[value]).groupby(key, sort=False):
        if g.step.max() < 2:
            continue
        early, late = g[g.rel_step < 1 / 3][value].mean(), g[g.rel_step > 2 / 3][value].mean()
        rows.append({key: k, cluster: g[cluster].iloc[0] if cluster in g else k, "early": early, "late": late,
                     "diff": late - early})
    return pd.DataFrame(rows, columns=[key, cluster, "early", "late", "diff"])


def position_configs(n_layers: int, max_position: int, ko_types: Sequence[str] = ("img->gen", "img->txt")) -> list:
    """The baseline (attention recorded) and, per knockout type (``vlmflow.presets.KO_TYPES``, every layer), the
    knockout with the first k generated tokens forced to the baseline's, k = 0..max_position (k = 0: free)."""
    from vlmflow.knockout import Knockout
    from vlmflow.presets import BASELINE_RECORD, KO_TYPES
    from vlmflow.sweep import SweepConfig

    targets = dict(KO_TYPES)
    unknown = [t for t in ko_types if t not in targets]
    if unknown:
        raise StepsError(f"unknown knockout types {unknown}; known: {', '.join(targets)}")
    out = [SweepConfig(record=BASELINE_RECORD, labels=(("family", "baseline"), ("ko_type", "none")))]
    for ko_type in ko_types:
        for k in range(int(max_position) + 1):
            out.append(SweepConfig((Knockout("image", targets[ko_type]),), force_prefix=k,
                                   labels=(("family", "position"), ("ko_type", ko_type), ("forced_k", k))))
    return out


def position_effect(rows: "pd.DataFrame", key: str = "item") -> "pd.DataFrame":
    """Per (``key``, ko_type, k): ``same`` = 1 when the token at output position k under the knockout (first k
    tokens forced) equals the baseline's token at k, else 0; positions past the end of the baseline are left out
    (the baseline's end-of-sequence counts as a token: a knockout that ends early or late at k is a change)."""
    import pandas as pd

    base = rows[rows.family == "baseline"].set_index(key).token_ids
    out = []
    for r in rows[rows.family == "position"].itertuples():
        ref = list(base[getattr(r, key)])
        k = int(r.forced_k)
        if k > len(ref):
            continue
        got = list(r.token_ids)
        ref_k = ref[k] if k < len(ref) else None  # None: the baseline ended here
        got_k = got[k] if k < len(got) else None
        out.append({key: getattr(r, key), "ko_type": r.ko_type, "k": k, "same": float(got_k == ref_k),
                    "rel_k": k / max(1, len(ref))})
    return pd.DataFrame(out, columns=[key, "ko_type", "k", "same", "rel_k"])


__all__ = ["GROUP_ROLES", "StepsError", "early_late", "position_configs", "position_effect", "step_rows"]
