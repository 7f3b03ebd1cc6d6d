"""Summaries derived from records with pandas: mean, std and n over seeds, and the paper-style pivot."""

from __future__ import annotations

import pandas as pd

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
    """One row per (method, protocol, metric): mean, std (ddof 1), n over seeds."""
    frame = label_rows(records)
    grouped = frame.groupby(["method", "protocol", "metric"])["value"]
    summary = grouped.agg(mean="mean", std="std", n="count").reset_index()
    return summary.fillna({"std": 0.0})


def paper_table(records: pd.DataFrame, metric: str = "accuracy", scale: float = 100.0) -> pd.DataFrame:
    """Rows = method, columns = protocols ("mean ± std" of `metric`, in %), plus pretraining time."""
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
    from scipy import stats

    frame = label_rows(records)
    rows = frame[(frame["protocol"] == protocol) & (frame["metric"] == metric)]
    by_seed = rows.pivot_table(index="seed", columns="method", values="value")
    if method not in by_seed or baseline not in by_seed:
        return None
    diff = (by_seed[method] - by_seed[baseline]).dropna()
    if diff.empty:
        return None
    n, mean = len(diff), float(diff.mean())
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * diff.std(ddof=1) / n**0.5) if n > 1 else float("inf")
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "per_seed": diff.tolist()}
