"""Cluster bootstrap: reproducible, contains its estimate, nominal coverage on known distributions (and, with
clustered data, only when resampling clusters), the vectorized mean path equal to the generic one, groupby CIs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from vlmflow.stats import CI, StatsError, bootstrap_ci, groupby_ci


def test_reproducible_and_seed_dependent():
    x = np.random.default_rng(0).normal(size=50)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    ci = bootstrap_ci(x)
    assert isinstance(ci, CI) and ci.estimate == pytest.approx(x.mean())


@pytest.mark.parametrize("statistic", [np.mean, np.median, np.max, np.min])
def test_interval_contains_estimate(statistic):
    rng = np.random.default_rng(1)
    for _ in range(30):
        x = rng.exponential(size=int(rng.integers(2, 12)))
        est, low, high = bootstrap_ci(x, statistic, n_resamples=200, seed=int(rng.integers(1000)))
        assert est == pytest.approx(statistic(x)) and low <= est <= high


def test_constant_data_gives_degenerate_interval():
    assert bootstrap_ci([0.7] * 20) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))


def test_coverage_on_normal_mean():
    rng = np.random.default_rng(2)
    hits = [lo <= 1.0 <= hi for _, lo, hi in
            (bootstrap_ci(rng.normal(1.0, 2.0, size=40), seed=i) for i in range(300))]
    assert 0.89 <= np.mean(hits) <= 0.985


def test_cluster_resampling_is_what_gives_coverage():
    """Rows share an image-level effect: the row bootstrap undercovers badly, the image bootstrap does not."""
    rng = np.random.default_rng(3)
    cluster_hits, row_hits = [], []
    for i in range(150):
        effects = rng.normal(0, 1, size=30)
        df = pd.DataFrame({"image_id": np.repeat(np.arange(30), 10),
                           "v": np.repeat(effects, 10) + rng.normal(0, 0.3, size=300)})
        _, lo, hi = bootstrap_ci(df, value="v", seed=i)
        cluster_hits.append(lo <= 0 <= hi)
        _, lo, hi = bootstrap_ci(df, value="v", cluster=None, seed=i)
        row_hits.append(lo <= 0 <= hi)
    assert np.mean(cluster_hits) >= 0.87
    assert np.mean(row_hits) <= 0.6


def test_width_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(4)
    w = {n: np.mean([np.subtract(*bootstrap_ci(rng.normal(size=n), seed=s)[2:0:-1]) for s in range(20)])
         for n in (100, 400)}
    assert 0.4 < w[400] / w[100] < 0.6


def test_vectorized_mean_equals_generic_statistic():
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"image_id": rng.integers(0, 12, size=60), "correct": rng.random(60) < 0.7})
    fast = bootstrap_ci(df, value="correct", seed=7)
    slow = bootstrap_ci(df, lambda v: float(np.mean(v)), value="correct", seed=7)
    assert fast == pytest.approx(slow)
    records = df.to_dict("records")
    assert bootstrap_ci(records, value="correct", seed=7) == pytest.approx(fast)


def test_errors_name_the_problem():
    with pytest.raises(StatsError, match="value="):
        bootstrap_ci(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(StatsError, match="'image_id'"):
        bootstrap_ci(pd.DataFrame({"a": [1.0]}), value="a")
    with pytest.raises(StatsError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(StatsError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=95)


def test_groupby_ci_matches_per_group_bootstrap():
    rng = np.random.default_rng(6)
    df = pd.DataFrame({"layer": np.repeat([0, 1, 2], 40), "setting": np.tile(["a", "b"], 60),
                       "image_id": np.tile(np.repeat(np.arange(10), 2), 6), "f1": rng.random(120)})
    out = groupby_ci(df, ["layer", "setting"], "f1", seed=1)
    assert list(out.columns) == ["layer", "setting", "f1", "f1_low", "f1_high", "n", "n_clusters"]
    expected = df.groupby(["layer", "setting"])["f1"].mean().to_numpy()
    np.testing.assert_allclose(out["f1"].to_numpy(), expected)
    assert (out["f1_low"] <= out["f1"]).all() and (out["f1"] <= out["f1_high"]).all()
    assert (out["n"] == 20).all() and (out["n_clusters"] == 10).all()
    row = out.iloc[3]
    sub = df[(df.layer == row.layer) & (df.setting == row.setting)]
    assert (row.f1, row.f1_low, row.f1_high) == pytest.approx(tuple(bootstrap_ci(sub, value="f1", seed=1)))
    with pytest.raises(StatsError, match="'nope'"):
        groupby_ci(df, "nope", "f1")
