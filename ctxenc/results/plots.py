"""Figures derived from records and checkpoints: bars with error bars, inpainting examples."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ctxenc.results.tables import label_rows, method_order, summarize  # noqa: E402


def bar_plot(records: pd.DataFrame, out: str | Path, metric: str = "accuracy", scale: float = 100.0,
             panels: list[dict] | None = None) -> Path:
    """One panel per protocol (or per `panels` entry {title, protocol, metric}): the metric by
    method, mean over seeds with std error bars, seeds as dots."""
    summary = summarize(records)
    points = label_rows(records)
    if panels is None:
        panels = [{"title": p, "protocol": p, "metric": metric}
                  for p in dict.fromkeys(summary[summary["metric"] == metric]["protocol"])]
    methods = method_order(points["method"])
    colors = plt.cm.tab10.colors
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        mine = (summary["protocol"] == panel["protocol"]) & (summary["metric"] == panel["metric"])
        rows = summary[mine].set_index("method").reindex(methods)
        seeds = points[(points["protocol"] == panel["protocol"]) & (points["metric"] == panel["metric"])]
        x = range(len(methods))
        ax.bar(x, rows["mean"] * scale, yerr=rows["std"] * scale, capsize=4,
               color=[colors[i % 10] for i in x], alpha=0.8, edgecolor="black", linewidth=0.6)
        for i, m in enumerate(methods):
            values = seeds[seeds["method"] == m]["value"] * scale
            ax.scatter([i] * len(values), values, color="black", s=10, zorder=3)
            if pd.notna(rows["mean"][m]):
                top = (rows["mean"][m] + rows["std"][m]) * scale  # above the error bar, not on it
                ax.annotate(f"{rows['mean'][m] * scale:.1f}", (i, top), ha="center",
                            va="bottom", xytext=(0, 3), textcoords="offset points", fontsize=8)
        low = (rows["mean"] - rows["std"]).min() * scale
        high = (rows["mean"] + rows["std"]).max() * scale
        pad = max(1.0, 0.25 * (high - low))
        ax.set_ylim(max(0.0, low - pad), min(scale, high + pad))
        ax.set_xticks(list(x), [short_name(m) for m in methods], fontsize=7)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(f"{panel['metric'].partition('@')[0]} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{', '.join(records['dataset'].unique())}: by pretraining (mean ± std over seeds, dots = seeds)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def short_name(method: str) -> str:
    """context_encoder/random_region/l2 -> 'CE\nrandom_region\nl2', for tick labels."""
    return method.replace("context_encoder/", "CE\n").replace("/", "\n")


def curve_plot(records: pd.DataFrame, out: str | Path, protocol: str, metric: str, xlabel: str, title: str,
               scale: float = 100.0) -> Path:
    """`metric`@q against the qualifier q (a label fraction or a stage) of `protocol`: one line per
    method, mean over seeds with std error bars. Fractions are ordered by value, stages as recorded."""
    summary = summarize(records)
    summary = summary[(summary["protocol"] == protocol) & summary["metric"].str.startswith(metric + "@")].copy()
    summary["q"] = summary["metric"].str.partition("@")[2]
    mine = records[(records["protocol"] == protocol) & records["metric"].str.startswith(metric + "@")]
    qualifiers = list(dict.fromkeys(mine["metric"].str.partition("@")[2]))  # in recorded order
    if all(q.endswith("%") for q in qualifiers):
        qualifiers.sort(key=lambda q: float(q[:-1]))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, method in enumerate(method_order(summary["method"])):
        rows = summary[summary["method"] == method].set_index("q").reindex(qualifiers)
        offset = (i - 2.5) * 0.03  # a small shift so the error bars of different methods do not hide each other
        ax.errorbar([k + offset for k in range(len(qualifiers))], rows["mean"] * scale, yerr=rows["std"] * scale,
                    marker="o", capsize=3, label=method.replace("context_encoder", "CE"), color=plt.cm.tab10.colors[i % 10])
    ax.set_xticks(range(len(qualifiers)), qualifiers)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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


def scenes_figure(images: torch.Tensor, class_maps: torch.Tensor, boxes: torch.Tensor, class_names: list[str],
                  out: str | Path, ignore: int = 255) -> Path:
    """Scenes with their class maps and boxes: images uint8 (N, 3, S, S), class_maps (N, S, S), boxes (N, K, 5).

    Row 1: the scene with its boxes and class names; row 2: the class map (background black,
    ignored pixels white).
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    n = images.shape[0]
    palette = [(0, 0, 0)] + [plt.cm.tab10.colors[i] for i in range(len(class_names))]
    cmap = ListedColormap(palette + [(1, 1, 1)])
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.9), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i].permute(1, 2, 0).numpy())
        for c, x0, y0, x1, y1 in boxes[i].tolist():
            if c < 0:
                continue
            axes[0, i].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                           edgecolor=palette[c + 1], linewidth=1.2))
            axes[0, i].text(x0, y0, class_names[c], fontsize=5, color="white", va="bottom",
                            bbox={"facecolor": palette[c + 1], "pad": 0.5, "linewidth": 0})
        shown = class_maps[i].long().clone()
        shown[shown == ignore] = len(palette)
        axes[1, i].imshow(shown.numpy(), cmap=cmap, vmin=0, vmax=len(palette), interpolation="nearest")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("scene + boxes", fontsize=8)
    axes[1, 0].set_ylabel("class map", fontsize=8)
    handles = [Patch(color=palette[k + 1], label=name) for k, name in enumerate(class_names)]
    handles += [Patch(color="black", label="background"), Patch(facecolor="white", edgecolor="grey", label="ignore")]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return Path(out)
