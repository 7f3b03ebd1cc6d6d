import math

import pandas as pd
import pytest

from ctxenc.results.stats import paired_differences, t_interval
from ctxenc.results.tables import difference_table, summarize


def test_t_interval_by_hand():
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert mean == 2.0 and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert math.isnan(t_interval([5.0])[1])


def test_paired_differences_remove_the_seed_effect():
    # Seed 1 is harder for both methods; the paired difference is exactly +2 on each seed.
    frame = pd.DataFrame({
        "method": ["random", "random", "random", "ce", "ce", "ce"],
        "seed": [0, 1, 2, 0, 1, 2],
        "protocol": "knn", "metric": "accuracy",
        "value": [80.0, 70.0, 75.0, 82.0, 72.0, 77.0],
    })
    diffs = paired_differences(frame)
    row = diffs[(diffs["method"] == "ce") & (diffs["baseline"] == "random")].iloc[0]
    assert row["difference"] == 2.0 and row["ci_low"] == pytest.approx(2.0) and row["n"] == 3
    assert bool(row["outside_noise"])  # zero variance: the interval is the point +2


def test_summaries_and_noise_marks():
    records = pd.DataFrame({
        "pretext": ["random"] * 3 + ["autoencoder"] * 3, "mask": "none", "loss": "l2", "seed": [0, 1, 2] * 2,
        "protocol": "linear_probe", "metric": "accuracy",
        "value": [0.80, 0.82, 0.84, 0.79, 0.85, 0.83],
    })
    summary = summarize(records).set_index("method")
    assert summary.loc["random", "mean"] == pytest.approx(0.82) and summary.loc["random", "std"] == pytest.approx(0.02)
    assert summary.loc["random", "n"] == 3
    table = difference_table(records)
    assert table.iloc[0]["comparison"] == "autoencoder − random" and table.iloc[0]["outside seed noise"] == "no"
