import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ctxenc.results.comparisons import compare, verdict
from ctxenc.results.stats import holm_adjust, paired_t_pvalue, t_interval
from ctxenc.results.tables import summarize


def test_t_interval_by_hand():
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert mean == 2.0 and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert math.isnan(t_interval([5.0])[1])


def test_holm_by_hand():
    # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06 by the step-down).
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Untested entries (nan) stay nan and do not enlarge the family; adjusted p never exceeds 1.
    adjusted = holm_adjust([0.2, math.nan, 0.6])
    assert adjusted[0] == pytest.approx(0.4) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.6)
    assert holm_adjust([0.7, 0.9]).tolist() == [1.0, 1.0]


def test_paired_t_pvalue_matches_scipy_and_its_limits():
    a, b = np.array([0.51, 0.55, 0.49, 0.60]), np.array([0.50, 0.52, 0.47, 0.55])
    assert paired_t_pvalue(a - b) == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue)
    assert paired_t_pvalue([2.0, 2.0, 2.0]) == 0.0 and paired_t_pvalue([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(paired_t_pvalue([1.0]))


def _records(values: dict[str, list[float]], protocol="knn", metric="accuracy") -> pd.DataFrame:
    rows = [{"method": m, "pretext": m.split("/")[0], "seed": s, "protocol": protocol, "metric": metric, "value": v}
            for m, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_paired_comparison_removes_the_seed_effect():
    # Seed 1 is harder for both methods; the paired difference is exactly +0.125 on each seed.
    records = _records({"random": [0.5, 0.25, 0.75], "ce": [0.625, 0.375, 0.875]})
    columns = [{"title": "knn", "protocol": "knn", "metric": "accuracy"}]
    row = compare(records, columns, [("ce", "random")]).iloc[0]
    assert row["difference"] == 0.125 and row["n"] == 3 and row["p"] == 0.0
    assert verdict(row, {}) == "**yes** at this budget"


def test_fewer_than_three_seeds_are_not_tested():
    records = _records({"random": [0.80, 0.70], "ce": [0.90, 0.80]})
    columns = [{"title": "knn", "protocol": "knn", "metric": "accuracy"}]
    row = compare(records, columns, [("ce", "random")]).iloc[0]
    assert math.isnan(row["p"]) and math.isnan(row["p_holm"])
    assert verdict(row, {}) == "not tested (2 seeds)"


def test_holm_applies_to_the_whole_family():
    # knn alone would be significant (p ~ 0.039); in a family of two, Holm doubles the smallest p.
    knn = _records({"random": [0.80, 0.70, 0.75], "ce": [0.83, 0.715, 0.77]})  # gaps .03 .015 .02
    probe = _records({"random": [0.80, 0.70, 0.75], "ce": [0.81, 0.69, 0.755]}, protocol="probe")  # gaps .01 -.01 .005
    columns = [{"title": "knn", "protocol": "knn", "metric": "accuracy"},
               {"title": "probe", "protocol": "probe", "metric": "accuracy"}]
    results = compare(pd.concat([knn, probe]), columns, [("ce", "random")]).set_index("title")
    p_knn, p_probe = paired_t_pvalue([0.03, 0.015, 0.02]), paired_t_pvalue([0.01, -0.01, 0.005])
    assert 0.025 < p_knn < 0.05 and p_probe > 0.5
    assert results.loc["knn", "p"] == pytest.approx(p_knn) and results.loc["knn", "p_holm"] == pytest.approx(2 * p_knn)
    assert results.loc["probe", "p_holm"] == pytest.approx(p_probe)
    # Not significant, and no paper gap to size the test against: inconclusive, with its MDE.
    assert verdict(results.loc["knn"], {}).startswith("**inconclusive** at this budget (MDE ")


def test_a_method_below_a_trivial_reference_is_not_called_better():
    records = _records({"random": [0.20, 0.21, 0.22], "ce": [0.25, 0.26, 0.27]}, protocol="finetune", metric="map")
    columns = [{"title": "mAP", "protocol": "finetune", "metric": "map"}]
    row = compare(records, columns, [("ce", "random")]).iloc[0]
    assert verdict(row, {"class prior": 0.30}) == "**does not beat the class prior** (26.0 vs 30.0)"


def test_summaries():
    records = pd.DataFrame({
        "pretext": ["random"] * 3 + ["autoencoder"] * 3, "mask": "none", "loss": "l2", "seed": [0, 1, 2] * 2,
        "protocol": "linear_probe", "metric": "accuracy",
        "value": [0.80, 0.82, 0.84, 0.79, 0.85, 0.83],
    })
    summary = summarize(records).set_index("method")
    assert summary.loc["random", "mean"] == pytest.approx(0.82) and summary.loc["random", "std"] == pytest.approx(0.02)
    assert summary.loc["random", "n"] == 3
    # One seed: its spread is unknown, not zero.
    one = summarize(records[records["seed"] == 0]).set_index("method")
    assert one.loc["random", "n"] == 1 and math.isnan(one.loc["random", "std"])


def test_pre_declared_primary_tests_are_adjusted_apart_from_the_rest():
    # The knn gap alone has p ~ 0.039: as the one primary test it keeps that p; the three
    # exploratory tests are adjusted among themselves.
    knn = _records({"random": [0.80, 0.70, 0.75], "ce": [0.83, 0.715, 0.77], "ae": [0.81, 0.69, 0.755]})
    probe = _records({"random": [0.80, 0.70, 0.75], "ce": [0.81, 0.69, 0.755], "ae": [0.82, 0.72, 0.76]},
                     protocol="probe")
    columns = [{"title": "knn", "protocol": "knn", "metric": "accuracy"},
               {"title": "probe", "protocol": "probe", "metric": "accuracy"}]
    results = compare(pd.concat([knn, probe]), columns, [("ae", "random"), ("ce", "random")],
                      primary=[("ce", "random", "knn")])
    first = results.iloc[0]
    assert (first["method"], first["title"], first["family"]) == ("ce", "knn", "primary")
    assert first["p_holm"] == pytest.approx(paired_t_pvalue([0.03, 0.015, 0.02]))
    assert verdict(first, {}) == "**yes** at this budget"
    rest = results.iloc[1:]
    assert (rest["family"] == "exploratory").all() and len(rest) == 3
    assert rest["p_holm"].tolist() == pytest.approx(holm_adjust(rest["p"]).tolist())
    assert (compare(pd.concat([knn, probe]), columns, [("ce", "random")])["family"] == "all").all()


def test_primary_tests_must_name_the_reports_columns():
    from ctxenc.errors import UserError
    from ctxenc.results.report import ReportConfig

    columns = ({"title": "knn", "protocol": "knn", "metric": "accuracy"},)
    assert ReportConfig(columns=columns, primary_comparisons=(("ce", "random"),), primary_columns=("knn",)).primary == (
        ("ce", "random", "knn"),)
    with pytest.raises(UserError, match="'probe' is not one of the report's column titles"):
        ReportConfig(columns=columns, primary_comparisons=(("ce", "random"),), primary_columns=("probe",))
    with pytest.raises(UserError, match="both primary_comparisons and primary_columns"):
        ReportConfig(columns=columns, primary_comparisons=(("ce", "random"),))
