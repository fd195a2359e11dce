"""Confidence intervals that respect how the data were sampled: by image.

Every number vlmflow reports (F1 of a knockout, ACC of re-prompting, localization accuracy) is an average over
images, and several rows often share an image (two MME questions, many objects, every layer). `bootstrap_ci`
therefore resamples *clusters* (images) with replacement, not rows, and applies the statistic to the pooled rows of
the drawn clusters; given a plain 1-D array it treats each value as its own cluster. `groupby_ci` does the same per
group of a pandas DataFrame for the figures (`vlmflow.figures`) and notebooks. Percentile intervals, seeded.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from vlmflow.errors import VlmflowError


class StatsError(VlmflowError):
    pass


class CI(NamedTuple):
    estimate: float
    low: float
    high: float


def _clusters(data: Any, value: str | None, cluster: str | None) -> list[np.ndarray]:
    """Group the values of `data` into one float array per cluster (in order of first appearance)."""
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        if value is None:
            raise StatsError(f"bootstrap_ci on a DataFrame needs value= (one of {list(data.columns)})")
        for col in (value, cluster):
            if col is not None and col not in data.columns:
                raise StatsError(f"column {col!r} not in the DataFrame (columns: {list(data.columns)})")
        vals = data[value].to_numpy(dtype=float)
        keys = data[cluster].tolist() if cluster is not None else None
    elif isinstance(data, (pd.Series, np.ndarray)) or (
            isinstance(data, Sequence) and (len(data) == 0 or np.isscalar(data[0]))):
        vals = np.asarray(data, dtype=float).reshape(-1)
        keys = None
    else:  # records: dicts or objects
        rows = list(data)
        if value is None:
            raise StatsError("bootstrap_ci on records needs value= (the field holding each row's number)")

        def get(r, name):
            if isinstance(r, dict):
                if name not in r:
                    raise StatsError(f"record {r!r} has no field {name!r}")
                return r[name]
            if not hasattr(r, name):
                raise StatsError(f"record {r!r} has no field {name!r}")
            return getattr(r, name)

        vals = np.array([get(r, value) for r in rows], dtype=float)
        keys = [get(r, cluster) for r in rows] if cluster is not None else None
    if vals.size == 0:
        raise StatsError("bootstrap_ci needs at least one value")
    if keys is None:
        return [vals[i:i + 1] for i in range(vals.size)]
    groups: dict[Any, list[float]] = {}
    for k, v in zip(keys, vals):
        groups.setdefault(k, []).append(v)
    return [np.asarray(g) for g in groups.values()]


def bootstrap_ci(data: Any, statistic: Callable[[np.ndarray], float] = np.mean, n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0, *, value: str | None = None,
                 cluster: str | None = "image_id") -> CI:
    """(estimate, low, high): `statistic` of all rows, and the percentile bootstrap interval over clusters.

    `data`: a 1-D array of per-image values (each its own cluster), or a DataFrame / records with a `value` column
    and a `cluster` column (default ``image_id``; None = every row its own cluster). Same seed, same interval.
    The interval is widened, if ever needed, to contain the estimate (a percentile interval of a skewed statistic
    can exclude it), so ``low <= estimate <= high`` always holds.
    """
    if not 0 < confidence < 1:
        raise StatsError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise StatsError(f"n_resamples must be >= 1, got {n_resamples}")
    clusters = _clusters(data, value, cluster)
    pooled = np.concatenate(clusters)
    estimate = float(statistic(pooled))
    k = len(clusters)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_resamples, k))  # [B, k] cluster indices
    if statistic is np.mean:  # pooled mean of the drawn clusters, vectorized
        sums = np.array([c.sum() for c in clusters])
        counts = np.array([c.size for c in clusters], dtype=float)
        boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    else:
        boot = np.array([statistic(np.concatenate([clusters[j] for j in row])) for row in draws], dtype=float)
    alpha = 1.0 - confidence
    low, high = np.nanquantile(boot, [alpha / 2, 1 - alpha / 2])
    return CI(estimate, float(min(low, estimate)), float(max(high, estimate)))


def groupby_ci(df, by: str | Iterable[str], value: str, cluster: str | None = "image_id",
               statistic: Callable[[np.ndarray], float] = np.mean, n_resamples: int = 1000,
               confidence: float = 0.95, seed: int = 0):
    """Aggregate `value` per group with bootstrap CIs: a DataFrame with the `by` columns, then `value` (the
    estimate), ``<value>_low``, ``<value>_high``, ``n`` (rows) and ``n_clusters``. Each group uses the same `seed`,
    so a group's interval does not depend on which other groups are present."""
    import pandas as pd

    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [*by, value] + ([cluster] if cluster else []) if c not in df.columns]
    if missing:
        raise StatsError(f"columns {missing} not in the DataFrame (columns: {list(df.columns)})")
    rows = []
    for key, group in df.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ci = bootstrap_ci(group, statistic, n_resamples, confidence, seed, value=value, cluster=cluster)
        rows.append({**dict(zip(by, key)), value: ci.estimate, f"{value}_low": ci.low, f"{value}_high": ci.high,
                     "n": len(group), "n_clusters": group[cluster].nunique() if cluster else len(group)})
    return pd.DataFrame(rows, columns=[*by, value, f"{value}_low", f"{value}_high", "n", "n_clusters"])
