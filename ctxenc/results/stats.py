"""How sure a result is: t intervals over seeds, paired t-tests and Holm's adjustment.

Seeds vary pretraining and evaluation together, so two methods evaluated with the same seed
form a pair; the paired difference removes what the seed does to both. A report asks many
questions at once (comparisons x columns), so its p-values are adjusted together with Holm's
step-down procedure (Holm 1979), which controls the family-wise error rate without assuming the
tests are independent.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

# Fewer paired seeds than this give no significance mark: with 2 seeds the t interval has one
# degree of freedom and a "significant" gap is mostly luck in the spread.
MIN_SEEDS_FOR_TEST = 3


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the t-distribution interval for the mean; nan bounds for n < 2."""
    values = pd.Series(values, dtype=float).dropna()
    n, mean = len(values), float(values.mean()) if len(values) else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_t_pvalue(differences) -> float:
    """Two-sided p-value of the paired t-test that the mean of `differences` is 0 (nan for n < 2).

    Differences without spread (every seed moved by exactly the same amount) give p = 0 when
    they are not zero and p = 1 when they are, the limits of the test as the spread vanishes.
    """
    d = pd.Series(differences, dtype=float).dropna()
    if len(d) < 2:
        return math.nan
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() != 0 else 1.0
    t = d.mean() / (sd / math.sqrt(len(d)))
    return float(2 * stats.t.sf(abs(t), len(d) - 1))


def holm_adjust(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; nan entries stay nan and are not
    counted in the family. With m tests sorted p(1) <= ... <= p(m):
    adjusted p(i) = max over j <= i of min(1, (m - j + 1) p(j))."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def paired_t_power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test at level `alpha` with `n` pairs whose differences have
    mean `effect` and standard deviation `sd`: P(|T| > t_crit) with T noncentral t, n - 1 degrees
    of freedom, noncentrality effect * sqrt(n) / sd."""
    df, nc = n - 1, effect * math.sqrt(n) / sd
    critical = stats.t.isf(alpha / 2, df)
    # P(T < -c) as P(-T > c), -T ~ nct(df, -nc): scipy's nct.cdf far in the tail returns nan.
    return float(stats.nct.sf(critical, df, nc) + stats.nct.sf(critical, df, -nc))


def minimum_detectable_effect(sd: float, n: int, alpha: float, power: float = 0.8) -> float:
    """The smallest true mean difference that the two-sided paired t-test at level `alpha` with
    `n` pairs detects with probability `power`, for differences of standard deviation `sd` (the
    observed seed spread); in the units of `sd`. nan for n < 2 or an unknown spread, 0 for none."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    high = sd
    while paired_t_power(high, sd, n, alpha) < power:  # power grows with the effect: bracket it
        high *= 2
    return float(optimize.brentq(lambda e: paired_t_power(e, sd, n, alpha) - power, 0.0, high, xtol=1e-10 * sd))
