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
