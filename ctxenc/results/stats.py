"""How sure a result is: t intervals over seeds and paired per-seed differences.

Seeds vary pretraining and evaluation together, so two methods evaluated with the same seed
form a pair; the paired difference removes what the seed does to both.
"""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the t-distribution interval for the mean; nan bounds for n < 2."""
    values = pd.Series(values, dtype=float).dropna()
    n, mean = len(values), float(values.mean()) if len(values) else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_differences(frame: pd.DataFrame, baselines=("random", "autoencoder"), confidence: float = 0.95) -> pd.DataFrame:
    """frame: rows with method, protocol, metric, seed, value.

    -> one row per (protocol, metric, method, baseline): mean difference (method - baseline)
    over the seeds both have, its t interval, n, and `outside_noise` (the interval excludes 0).
    """
    rows = []
    for (protocol, metric), group in frame.groupby(["protocol", "metric"], sort=False):
        by_seed = group.pivot_table(index="seed", columns="method", values="value")
        for baseline in baselines:
            if baseline not in by_seed:
                continue
            for method in by_seed.columns:
                if method == baseline or method in baselines[: baselines.index(baseline)]:
                    continue
                diff = (by_seed[method] - by_seed[baseline]).dropna()
                mean, low, high = t_interval(diff, confidence)
                rows.append({"protocol": protocol, "metric": metric, "method": method, "baseline": baseline,
                             "difference": mean, "ci_low": low, "ci_high": high, "n": len(diff),
                             "outside_noise": bool(low > 0 or high < 0)})
    return pd.DataFrame(rows, columns=["protocol", "metric", "method", "baseline", "difference", "ci_low", "ci_high", "n", "outside_noise"])
