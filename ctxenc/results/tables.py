"""Summaries derived from records with pandas: mean, std, n and 95% intervals over seeds,
paired differences, and the paper-style pivot."""

from __future__ import annotations

import pandas as pd

from ctxenc.results.stats import paired_differences, t_interval

PRETEXT_ORDER = ["random", "autoencoder", "context_encoder"]


def label_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Add `method`: random, autoencoder, or context_encoder/<mask>/<loss> as tables show it."""
    frame = records.copy()
    ce = frame["pretext"] == "context_encoder"
    frame["method"] = frame["pretext"]
    frame.loc[ce, "method"] = frame.loc[ce, "pretext"] + "/" + frame.loc[ce, "mask"] + "/" + frame.loc[ce, "loss"]
    return frame


def method_order(methods) -> list[str]:
    return sorted(set(methods), key=lambda m: (PRETEXT_ORDER.index(m.split("/")[0]) if m.split("/")[0] in PRETEXT_ORDER else 99, m))


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, protocol, metric): mean, std (ddof 1), n and the 95% t interval."""
    rows = []
    for (method, protocol, metric), values in label_rows(records).groupby(["method", "protocol", "metric"])["value"]:
        mean, low, high = t_interval(values)
        rows.append({"method": method, "protocol": protocol, "metric": metric, "mean": mean,
                     "std": values.std(ddof=1) if len(values) > 1 else 0.0, "n": len(values), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "protocol", "metric", "mean", "std", "n", "ci_low", "ci_high"])


def paper_table(records: pd.DataFrame, metric: str = "accuracy", scale: float = 100.0) -> pd.DataFrame:
    """Rows = method, columns = protocols ("mean ± std" of `metric`, in %), plus pretraining time and n."""
    frame = label_rows(records)
    summary = summarize(records)
    summary = summary[summary["metric"] == metric]
    cells = summary.assign(cell=[f"{m * scale:.1f} ± {s * scale:.1f}" for m, s in zip(summary["mean"], summary["std"])])
    table = cells.pivot(index="method", columns="protocol", values="cell")
    seeds = frame.groupby("method")["seed"].nunique()
    seconds = frame.groupby("method")["pretrain_seconds"].mean()
    table.insert(0, "pretraining time", [f"{seconds[m]:.0f} s" for m in table.index])
    table.insert(1, "seeds", [int(seeds[m]) for m in table.index])
    table = table.loc[method_order(table.index)]
    table.columns.name = None
    return table.rename(columns={p: f"{p} {metric} (%)" for p in summary["protocol"].unique()})


def split_metric(metric: str) -> tuple[str, str | None]:
    """'map@10%' -> ('map', '10%'), 'miou' -> ('miou', None): a metric and its qualifier (label
    fraction or encoder stage), as records name them."""
    base, _, qualifier = metric.partition("@")
    return base, qualifier or None


def column_table(records: pd.DataFrame, columns: list[dict], scale: float = 100.0) -> pd.DataFrame:
    """Rows = method; "pretraining time", "seeds", then one "mean ± std" column per entry of
    `columns` ({title, protocol, metric}), values scaled by `scale` (to %)."""
    frame = label_rows(records)
    summary = summarize(records).set_index(["method", "protocol", "metric"])
    methods = method_order(frame["method"])
    table = pd.DataFrame(index=pd.Index(methods, name=None))
    seconds = frame.groupby("method")["pretrain_seconds"].mean()
    table["pretraining time"] = [f"{seconds[m]:.0f} s" for m in methods]
    table["seeds"] = [int(frame[frame["method"] == m]["seed"].nunique()) for m in methods]
    for col in columns:
        cells = []
        for m in methods:
            key = (m, col["protocol"], col["metric"])
            cells.append(f"{summary.loc[key, 'mean'] * scale:.1f} ± {summary.loc[key, 'std'] * scale:.1f}"
                         if key in summary.index else "–")
        table[col["title"]] = cells
    return table


def paired_difference(records: pd.DataFrame, method: str, baseline: str, protocol: str, metric: str,
                      confidence: float = 0.95) -> dict | None:
    """`method` − `baseline` on (protocol, metric), paired by seed: mean, t-interval, per-seed values.

    Returns None when the two share no seed. With one shared seed the interval is infinite.
    """
    frame = label_rows(records)
    rows = frame[(frame["protocol"] == protocol) & (frame["metric"] == metric)]
    by_seed = rows.pivot_table(index="seed", columns="method", values="value")
    if method not in by_seed or baseline not in by_seed:
        return None
    diff = (by_seed[method] - by_seed[baseline]).dropna()
    if diff.empty:
        return None
    mean, low, high = t_interval(diff, confidence)
    if len(diff) == 1:  # one shared seed: no spread to estimate, the interval is unbounded
        low, high = float("-inf"), float("inf")
    n = len(diff)
    return {"mean": mean, "low": low, "high": high, "n": n, "per_seed": diff.tolist()}


def interval_table(records: pd.DataFrame, metric: str = "accuracy", scale: float = 100.0) -> pd.DataFrame:
    """Mean, std, n and 95% t interval per method and protocol (long form, in %)."""
    summary = summarize(records)
    summary = summary[summary["metric"] == metric]
    table = pd.DataFrame({
        "method": summary["method"], "protocol": summary["protocol"],
        "mean": (summary["mean"] * scale).round(2), "std": (summary["std"] * scale).round(2), "n": summary["n"],
        "95% CI": [f"[{lo * scale:.2f}, {hi * scale:.2f}]" for lo, hi in zip(summary["ci_low"], summary["ci_high"])],
    })
    table["order"] = table["method"].map({m: i for i, m in enumerate(method_order(table["method"]))})
    return table.sort_values(["protocol", "order"]).drop(columns="order").reset_index(drop=True)


def difference_table(records: pd.DataFrame, metric: str = "accuracy", scale: float = 100.0) -> pd.DataFrame:
    """Paired per-seed differences against random and autoencoder (in points), marked where the
    95% interval excludes zero (outside seed noise)."""
    frame = label_rows(records)
    diffs = paired_differences(frame[frame["metric"] == metric])
    return pd.DataFrame({
        "protocol": diffs["protocol"],
        "comparison": diffs["method"] + " − " + diffs["baseline"],
        "difference": [f"{d * scale:+.2f}" for d in diffs["difference"]],
        "95% CI": [f"[{lo * scale:+.2f}, {hi * scale:+.2f}]" for lo, hi in zip(diffs["ci_low"], diffs["ci_high"])],
        "n": diffs["n"],
        "outside seed noise": ["yes" if o else "no" for o in diffs["outside_noise"]],
    })
