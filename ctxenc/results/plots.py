"""Figures derived from records and checkpoints: bars with error bars, inpainting examples."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ctxenc.results.tables import label_rows, method_order, summarize  # noqa: E402


def bar_plot(records: pd.DataFrame, out: str | Path, metric: str = "accuracy", scale: float = 100.0) -> Path:
    """One panel per protocol: `metric` by method, mean over seeds with std error bars, seeds as dots."""
    summary = summarize(records)
    summary = summary[summary["metric"] == metric]
    points = label_rows(records)
    points = points[points["metric"] == metric]
    protocols = list(dict.fromkeys(summary["protocol"]))
    methods = method_order(summary["method"])
    colors = plt.cm.tab10.colors
    fig, axes = plt.subplots(1, len(protocols), figsize=(4.2 * len(protocols), 3.8), squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        rows = summary[summary["protocol"] == protocol].set_index("method").reindex(methods)
        x = range(len(methods))
        ax.bar(x, rows["mean"] * scale, yerr=rows["std"] * scale, capsize=4,
               color=[colors[i % 10] for i in x], alpha=0.8, edgecolor="black", linewidth=0.6)
        for i, m in enumerate(methods):
            seeds = points[(points["protocol"] == protocol) & (points["method"] == m)]["value"] * scale
            ax.scatter([i] * len(seeds), seeds, color="black", s=10, zorder=3)
            top = (rows["mean"][m] + rows["std"][m]) * scale  # above the error bar, not on it
            ax.annotate(f"{rows['mean'][m] * scale:.1f}", (i, top), ha="center",
                        va="bottom", xytext=(0, 3), textcoords="offset points", fontsize=8)
        low = (rows["mean"] - rows["std"]).min() * scale
        high = (rows["mean"] + rows["std"]).max() * scale
        pad = max(1.0, 0.25 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(scale, high + pad))
        ax.set_xticks(list(x), [m.replace("context_encoder/", "CE\n").replace("/", " ") for m in methods], fontsize=8)
        ax.set_title(protocol)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{records['dataset'].iloc[0]}: {metric} by pretraining (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def to_display(x: torch.Tensor):
    """(C, H, W) in [-1, 1] -> numpy (H, W) or (H, W, 3) in [0, 1]."""
    img = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[2] == 1 else img


def inpainting_grid(rows: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]], out: str | Path) -> Path:
    """rows: (label, masked (N, C, S, S), completed (N, C, S, S), original (N, C, S, S)), all in [-1, 1].

    One block of three rows per model: masked input, completed output, original.
    """
    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(3 * len(rows), n, figsize=(1.1 * n, 1.2 * 3 * len(rows)), squeeze=False)
    for r, (label, masked, completed, original) in enumerate(rows):
        for j, (name, batch) in enumerate((("masked input", masked), ("context encoder", completed), ("original", original))):
            for i in range(n):
                ax = axes[3 * r + j, i]
                ax.imshow(to_display(batch[i]), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[3 * r + j, 0].set_ylabel(f"{name}" if j else f"{label}\n{name}", fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)
