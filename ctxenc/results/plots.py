"""Charts rendered from records: bars per method, curves over label fractions or encoder stages,
and transfer against pretraining length. Each returns the PNG it wrote, or None when the records
hold nothing to draw (a report then skips the figure)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ctxenc.results.records import with_methods  # noqa: E402
from ctxenc.results.tables import method_order, qualifiers, summarize  # noqa: E402

COLORS = plt.cm.tab10.colors
MARKERS = ["o", "s", "^", "D"]
LINES = ["-", "--", ":", "-."]


def line_style(i: int) -> dict:
    """The i-th method's line: tab10's colours, then again with another marker and dash, so a
    legend of more than 10 methods never shows two identical lines."""
    cycle = i // len(COLORS)
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[cycle % len(MARKERS)],
            "linestyle": LINES[cycle % len(LINES)]}


def short_name(method: str) -> str:
    """context_encoder/random_region/l2 -> 'CE\nrandom_\nregion\nl2': tick labels broken after '/',
    '_' and '=', narrow enough not to run into their neighbours."""
    return method.replace("context_encoder/", "CE\n").replace("/", "\n").replace("_", "_\n").replace("=", "=\n")


def bar_plot(records: pd.DataFrame, out: str | Path, panels: list[dict], scale: float = 100.0) -> Path | None:
    """One panel per entry {title, protocol, metric, references?} that the records hold: the
    metric by method, mean over seeds with std error bars and seeds as dots, the value axis from
    zero, each trivial reference ({name: value}) a dashed line, the mean written above the
    highest of its error bar and its dots. None when no panel has records."""
    summary = summarize(records)
    points = with_methods(records)
    panels = [p for p in panels if ((summary["protocol"] == p["protocol"]) & (summary["metric"] == p["metric"])).any()]
    if not panels:
        return None
    methods = method_order(points["method"])
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(5.2, 0.75 * len(methods) + 1.5) * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        mine = (summary["protocol"] == panel["protocol"]) & (summary["metric"] == panel["metric"])
        rows = summary[mine].set_index("method").reindex(methods)
        seeds = points[(points["protocol"] == panel["protocol"]) & (points["metric"] == panel["metric"])]
        x = np.arange(len(methods))
        ax.bar(x, rows["mean"] * scale, yerr=rows["std"] * scale, capsize=4,
               color=[COLORS[i % 10] for i in x], alpha=0.8, edgecolor="black", linewidth=0.6)
        top = 0.0
        for i, m in enumerate(methods):
            values = seeds[seeds["method"] == m]["value"] * scale
            ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
            if pd.notna(rows["mean"][m]):
                above = max((rows["mean"][m] + rows["std"][m]) * scale, values.max())
                top = max(top, above)
                ax.annotate(f"{rows['mean'][m] * scale:.1f}", (i, above), ha="center", va="bottom",
                            xytext=(0, 4), textcoords="offset points", fontsize=8)
        for k, (name, value) in enumerate((panel.get("references") or {}).items()):
            ax.axhline(value * scale, color="dimgray", linestyle=["--", ":", "-."][k % 3], linewidth=1.2,
                       label=f"{name}: {value * scale:.1f}")
            top = max(top, value * scale)
        headroom = 1.12
        if panel.get("references"):  # the legend gets a band of its own above the tallest bar and its label
            ax.legend(fontsize=7, loc="upper right", frameon=False)
            headroom = 1.3
        ax.set_ylim(0.0, top * headroom + 1e-9)
        ax.set_xticks(x, [short_name(m) for m in methods], fontsize=7)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(f"{panel['metric'].partition('@')[0]} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{', '.join(records['dataset'].astype(str).unique())}: by pretraining (mean ± std over seeds, dots = seeds)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def curve_plot(records: pd.DataFrame, out: str | Path, protocol: str, metric: str, xlabel: str, title: str,
               scale: float = 100.0) -> Path:
    """`metric`@q against the qualifier q (a label fraction or a stage) of `protocol`: one line per
    method, mean over seeds with std error bars. Fractions are ordered by value, stages as recorded."""
    summary = summarize(records)
    summary = summary[(summary["protocol"] == protocol) & summary["metric"].str.startswith(metric + "@")].copy()
    summary["q"] = summary["metric"].str.partition("@")[2]
    order = qualifiers(records, protocol, metric)
    methods = method_order(summary["method"])
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for i, method in enumerate(methods):
        rows = summary[summary["method"] == method].set_index("q").reindex(order)
        offset = (i - (len(methods) - 1) / 2) * 0.03  # a small shift so error bars of different methods do not hide each other
        ax.errorbar(np.arange(len(order)) + offset, rows["mean"] * scale, yerr=rows["std"] * scale, capsize=3,
                    label=method.replace("context_encoder", "CE"), **line_style(i))
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def swept(records: pd.DataFrame) -> bool:
    """Whether some method was pretrained for more than one length (`pretrain_steps`)."""
    if "pretrain_steps" not in records:
        return False
    frame = with_methods(records)
    steps = pd.to_numeric(frame["pretrain_steps"], errors="coerce")
    return bool((steps.groupby(frame["method"]).nunique() > 1).any())


def sweep_plot(records: pd.DataFrame, out: str | Path, panels: list[dict], scale: float = 100.0) -> Path | None:
    """Transfer against pretraining length: one panel per entry {title, protocol, metric}, one
    line per method (mean ± std over seeds at each `pretrain_steps`), steps on a symlog axis so
    0 steps (no pretraining) sits beside the long runs. None unless `swept(records)` and some
    panel has records."""
    if not swept(records):
        return None
    frame = with_methods(records)
    frame = frame.assign(pretrain_steps=pd.to_numeric(frame["pretrain_steps"], errors="coerce")).dropna(subset=["pretrain_steps"])
    panels = [p for p in panels if ((frame["protocol"] == p["protocol"]) & (frame["metric"] == p["metric"])).any()]
    if not panels:
        return None
    methods = method_order(frame["method"])
    positive = frame.loc[frame["pretrain_steps"] > 0, "pretrain_steps"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        mine = frame[(frame["protocol"] == panel["protocol"]) & (frame["metric"] == panel["metric"])]
        for i, method in enumerate(methods):
            stats = mine[mine["method"] == method].groupby("pretrain_steps")["value"].agg(["mean", "std"]).fillna(0.0)
            if stats.empty:
                continue
            ax.errorbar(stats.index, stats["mean"] * scale, yerr=stats["std"] * scale, capsize=3,
                        label=method.replace("context_encoder", "CE"), **line_style(i))
        ax.set_xscale("symlog", linthresh=float(positive.min()) if not positive.empty else 1.0)
        steps = sorted(mine["pretrain_steps"].unique())
        ax.set_xticks(steps, [f"{s:.0f}" for s in steps])
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel(f"{panel['metric'].partition('@')[0]} (%)")
        ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("transfer against pretraining length (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)
