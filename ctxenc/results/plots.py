"""Charts rendered from records: bars per method, paired differences with their intervals, curves
over label fractions or encoder stages, and transfer against pretraining length. Each writes a PNG
and a vector PDF beside it (`save_figure`) and returns the PNG's path, or None when the records
hold nothing to draw (a report then skips the figure). Methods, protocols and metrics are printed
by their human names (`Names`, from the suite's `report: display:`)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ctxenc.results.figures import save_figure  # noqa: E402
from ctxenc.results.names import Names, wrap  # noqa: E402
from ctxenc.results.records import with_methods  # noqa: E402
from ctxenc.results.tables import method_order, qualifiers, summarize  # noqa: E402

COLORS = plt.cm.tab10.colors
# Bars are coloured by family, in shades of one hue within it (pretext -> (legend name, colour map)),
# so supervised, the random inits, the autoencoder, the context encoders and the other pretexts read
# apart at a glance; tab10 by row repeated its colours past 10 rows.
FAMILIES = {"supervised": ("Supervised", "Greens"), "random": ("Random init", "Greys"),
            "autoencoder": ("Autoencoder", "Oranges"), "context_encoder": ("Context encoders", "Blues"),
            "other": ("Other pretexts", "Purples")}
PASS_COLOR, FAIL_COLOR, INSENSITIVE_FACE = "tab:green", "tab:red", "#eeeeee"
MARKERS = ["o", "s", "^", "D"]
LINES = ["-", "--", ":", "-."]
TICK_FONT = 7
CHARS_PER_INCH = 17  # of 7 pt text: how many characters fit across an inch


def line_style(i: int) -> dict:
    """The i-th method's line: tab10's colours, then again with another marker and dash, so a
    legend of more than 10 methods never shows two identical lines."""
    cycle = i // len(COLORS)
    return {"color": COLORS[i % len(COLORS)], "marker": MARKERS[cycle % len(MARKERS)],
            "linestyle": LINES[cycle % len(LINES)]}


def method_family(method: str) -> str:
    """The key of FAMILIES a method's bar is coloured by: its pretext, or "other"."""
    pretext = method.split("/")[0]
    return pretext if pretext in FAMILIES else "other"


def family_colors(methods: list[str]) -> dict[str, tuple]:
    """{method: RGBA}: one hue per family, its members in evenly spaced shades, dark to light."""
    members = {}
    for method in methods:
        members.setdefault(method_family(method), []).append(method)
    colors = {}
    for family, group in members.items():
        cmap = plt.get_cmap(FAMILIES[family][1])
        # dark to light, never so dark that the black seed dots vanish nor so light that a bar does
        shades = np.linspace(0.75, 0.35, len(group)) if len(group) > 1 else [0.6]
        colors.update({method: cmap(shade) for method, shade in zip(group, shades)})
    return colors


def lines_needed(labels: list[str], width: int) -> int:
    return max(wrap(label, width).count("\n") + 1 for label in labels)


def method_ticks(ax, labels: list[str], slot_inches: float) -> None:
    """Method names under the bars, wrapped at word boundaries only. Upright when every name fits
    a bar's slot in 3 lines; otherwise slanted at 45 degrees, in as few lines as the gap between
    neighbouring labels holds, so no name is cut and no two overlap."""
    width = max(6, int(slot_inches * CHARS_PER_INCH))
    if lines_needed(labels, width) <= 3:
        ax.set_xticks(range(len(labels)), [wrap(label, width) for label in labels], fontsize=TICK_FONT)
        return
    gap_points = slot_inches * 72 * math.sin(math.radians(45))  # between neighbouring slanted labels
    fits = max(1, int(gap_points // (TICK_FONT * 1.6)))  # lines of text, with room between labels
    width = next((w for w in range(16, 80) if lines_needed(labels, w) <= fits), 80)
    ax.set_xticks(range(len(labels)), [wrap(label, width) for label in labels], fontsize=TICK_FONT,
                  rotation=45, ha="right", rotation_mode="anchor")


def bar_plot(records: pd.DataFrame, out: str | Path, panels: list[dict], names: Names = Names(),
             marks: dict | None = None, scale: float = 100.0) -> Path | None:
    """One panel per entry {title, protocol, metric, references?} that the records hold: the
    metric by method, mean over seeds with std error bars and seeds as dots, bars coloured by
    family (`family_colors`), the value axis from zero, each trivial reference ({name: value}) a
    dashed line, the mean written above the highest of its error bar and its dots. A method with
    one seed has no error bar (its spread is unknown) and says "n = 1".

    marks: {panel title: (text, passed)}: a verdict panel's control status and MDE, printed under
    its title, green where its control passes (passed True), red on a shaded panel where it does
    not (False), black where there is no control (None). None when no panel has records."""
    summary = summarize(records)
    points = with_methods(records)
    panels = [p for p in panels if ((summary["protocol"] == p["protocol"]) & (summary["metric"] == p["metric"])).any()]
    if not panels:
        return None
    methods = method_order(points["method"])
    colors = family_colors(methods)
    marks = marks or {}
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    panel_width = max(4.5, 0.55 * len(methods) + 1.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_width * ncols, 4.6 * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    single = False
    for ax, panel in zip(axes.flat, panels):
        mine = (summary["protocol"] == panel["protocol"]) & (summary["metric"] == panel["metric"])
        rows = summary[mine].set_index("method").reindex(methods)
        seeds = points[(points["protocol"] == panel["protocol"]) & (points["metric"] == panel["metric"])]
        x = np.arange(len(methods))
        ax.bar(x, rows["mean"] * scale, yerr=rows["std"] * scale, capsize=4,
               color=[colors[m] for m in methods], edgecolor="black", linewidth=0.6)
        top = 0.0
        for i, m in enumerate(methods):
            values = seeds[seeds["method"] == m]["value"] * scale
            ax.scatter([i] * len(values), values, color="black", edgecolors="white", linewidths=0.4, s=12, zorder=3)
            if pd.notna(rows["mean"][m]):
                above = max((rows["mean"][m] + np.nan_to_num(rows["std"][m])) * scale, values.max())
                top = max(top, above)
                one = rows["n"][m] == 1
                single |= one
                ax.annotate(f"{rows['mean'][m] * scale:.1f}" + ("\nn = 1" if one else ""), (i, above), ha="center",
                            va="bottom", xytext=(0, 4), textcoords="offset points", fontsize=8)
        for k, (name, value) in enumerate((panel.get("references") or {}).items()):
            ax.axhline(value * scale, color="dimgray", linestyle=["--", ":", "-."][k % 3], linewidth=1.2,
                       label=f"{name}: {value * scale:.1f}")
            top = max(top, value * scale)
        headroom = 1.12
        if panel.get("references"):  # the legend gets a band of its own above the tallest bar and its label
            ax.legend(fontsize=7, loc="upper right", frameon=False)
            headroom = 1.3
        ax.set_ylim(0.0, top * headroom + 1e-9)
        method_ticks(ax, [names.method(m) for m in methods], panel_width / len(methods))
        mark_panel(ax, names.title(panel["title"]), *marks.get(panel["title"], ("", None)))
        ax.set_ylabel(names.axis(panel["metric"]))
        ax.grid(axis="y", alpha=0.3)
    present = dict.fromkeys(method_family(m) for m in methods)
    fig.legend(handles=[Patch(facecolor=plt.get_cmap(FAMILIES[f][1])(0.6), edgecolor="black", linewidth=0.6,
                              label=FAMILIES[f][0]) for f in present],
               loc="outside lower center", ncol=len(present), fontsize=7, frameon=False)
    datasets = ", ".join(names.dataset(d) for d in records["dataset"].dropna().astype(str).unique())
    fig.suptitle(f"{datasets}: transfer by pretraining method (mean ± std over seeds; dots: seeds"
                 + ("; n = 1: one seed, spread unknown" if single else "") + ")", fontsize=10)
    return save_figure(fig, out)


def mark_panel(ax, title: str, text: str = "", passed: bool | None = None, width: int = 60) -> None:
    """The panel's title and, under it, `text` (its control and MDE): green when its control
    passed, red on a shaded panel when it did not, black when there is no control."""
    ax.set_title(wrap(title, width), fontsize=10, pad=4 + 8.5 * (text.count("\n") + 1 if text else 0))
    if not text:
        return
    color = {True: PASS_COLOR, False: FAIL_COLOR}.get(passed, "black")
    ax.text(0.5, 1.01, text, transform=ax.transAxes, ha="center", va="bottom", fontsize=6.5, color=color)
    if passed is False:
        ax.set_facecolor(INSENSITIVE_FACE)


def comparison_label(method: str, baseline: str, names: Names) -> str:
    """The method's name, then on the next line '− ' and the baseline's, each wrapped at word boundaries."""
    return f"{wrap(names.method(method), 40)}\n− {wrap(names.method(baseline), 38)}"


def difference_plot(results: pd.DataFrame, out: str | Path, columns: list[dict], names: Names = Names(),
                    controls: pd.DataFrame | None = None, scale: float = 100.0) -> Path | None:
    """The report's comparisons as paired differences: one panel per column, one row per
    comparison (method − baseline, paired by seed, in points), its mean with the 95% t interval
    (`compare`'s ci_low, ci_high) labelled with its MDE where tested, each seed's difference a grey
    dot, zero a line. Primary tests are drawn in blue. A pair with one seed is a point without an
    interval, marked "n = 1".

    controls: `comparisons.positive_controls`' rows, drawn as each panel's top row, green where
    the control passes and red where it does not, the gap it needs a dashed tick; a panel whose
    control fails is shaded and titled "insensitive at this budget".

    results: `comparisons.compare`'s rows. None when it has none.
    """
    if results.empty:
        return None
    if controls is not None:
        results = pd.concat([controls[controls["n"] > 0].reindex(columns=results.columns), results], ignore_index=True)
        status = controls.set_index("title")
    pairs = list(dict.fromkeys(zip(results["method"], results["baseline"], results["family"] == "control")))
    titles = [c["title"] for c in columns if (results["title"] == c["title"]).any()]
    ncols = min(len(titles), 3)
    nrows = -(-len(titles) // ncols)
    height = 0.5 * len(pairs) + 1.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 + 2.8 * ncols, height * nrows + 0.5), squeeze=False,
                             sharey=True, layout="constrained")
    for ax in axes.flat[len(titles):]:
        ax.set_visible(False)
    single = primary = False
    for ax, title in zip(axes.flat, titles):
        mine = results[results["title"] == title].assign(control=lambda f: f["family"] == "control")
        mine = mine.set_index(["method", "baseline", "control"])
        control = status.loc[title] if controls is not None and title in status.index else None
        for y, pair in enumerate(pairs):
            if pair not in mine.index:
                continue
            row = mine.loc[pair]
            if pair[2]:  # the control row: its verdict's colour, the gap it needs a dashed tick
                color = PASS_COLOR if control["passed"] else FAIL_COLOR
                if not math.isnan(control["threshold"]):
                    ax.plot([control["threshold"]] * 2, [y - 0.3, y + 0.3], color=color, linestyle="--", linewidth=1)
            else:
                color = "tab:blue" if row["family"] == "primary" else "black"
            primary |= row["family"] == "primary"
            d = row["difference"] * scale
            ax.scatter(np.asarray(row["per_seed"]) * scale, [y + 0.2] * len(row["per_seed"]), s=9, color="grey",
                       alpha=0.8, linewidths=0, zorder=2)  # just below the interval (the y axis runs downwards)
            if math.isnan(row["ci_low"]):
                ax.plot([d], [y], "o", color=color, markersize=5, zorder=3)
                single |= row["n"] == 1
                note = f"{d:+.1f}" + (", n = 1" if row["n"] == 1 else "")
            else:
                ax.errorbar([d], [y], xerr=[[d - row["ci_low"] * scale], [row["ci_high"] * scale - d]], fmt="o",
                            color=color, markersize=5, capsize=3, linewidth=1.3, zorder=3)
                note = f"{d:+.1f}" + ("" if pair[2] or math.isnan(row["mde"]) else f" (MDE {row['mde'] * scale:.1f})")
            ax.annotate(note, (d, y), xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                        fontsize=6.5, color=color)
        ax.axvline(0.0, color="dimgray", linewidth=0.9)
        ax.set_title(wrap(names.title(title), 40) + ("" if control is None else
                     "\ncontrol passes" if control["passed"] else f"\n{control['status']}"),
                     fontsize=9, color="black" if control is None or control["passed"] else FAIL_COLOR)
        if control is not None and not control["passed"]:
            ax.set_facecolor(INSENSITIVE_FACE)
        ax.set_xlabel("difference (points)", fontsize=8)
        ax.tick_params(labelsize=TICK_FONT)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_ylim(len(pairs) - 0.5, -0.6)  # shared: the first comparison on top
    axes[0, 0].set_yticks(range(len(pairs)), [("control: " if c else "") + comparison_label(m, b, names)
                                               for m, b, c in pairs], fontsize=TICK_FONT)
    handles = [Line2D([], [], color="black", marker="o", linestyle="-", label="mean difference, 95% t interval"),
               Line2D([], [], color="grey", marker="o", linestyle="", markersize=4, label="one seed's difference")]
    if primary:
        handles.append(Line2D([], [], color="tab:blue", marker="o", linestyle="-", label="primary test"))
    if single:
        handles.append(Line2D([], [], color="black", marker="o", linestyle="", label="n = 1: no interval (spread unknown)"))
    if controls is not None:
        handles += [Line2D([], [], color=PASS_COLOR, marker="o", label="control passes"),
                    Line2D([], [], color=FAIL_COLOR, marker="o", label="control fails: column insensitive"),
                    Line2D([], [], color="black", linestyle="--", label="gap the control needs")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=7, frameon=False)
    fig.suptitle("Paired differences, method − baseline, paired by seed (points)", fontsize=10)
    return save_figure(fig, out)


def curve_plot(records: pd.DataFrame, out: str | Path, protocol: str, metric: str, xlabel: str, title: str,
               names: Names = Names(), scale: float = 100.0) -> Path:
    """`metric`@q against the qualifier q (a label fraction or a stage) of `protocol`: one line per
    method, mean over seeds with std error bars (none for one seed). Fractions are ordered by
    value, stages as recorded; the legend sits right of the axes, off the data."""
    summary = summarize(records)
    summary = summary[(summary["protocol"] == protocol) & summary["metric"].str.startswith(metric + "@")].copy()
    summary["q"] = summary["metric"].str.partition("@")[2]
    order = qualifiers(records, protocol, metric)
    methods = method_order(summary["method"])
    fig, ax = plt.subplots(figsize=(8.0, 4.0), layout="constrained")
    for i, method in enumerate(methods):
        rows = summary[summary["method"] == method].set_index("q").reindex(order)
        offset = (i - (len(methods) - 1) / 2) * 0.03  # a small shift so error bars of different methods do not hide each other
        ax.errorbar(np.arange(len(order)) + offset, rows["mean"] * scale, yerr=rows["std"] * scale, capsize=3,
                    label=wrap(names.method(method), 30), **line_style(i))
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(names.axis(metric))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return save_figure(fig, out)


def swept(records: pd.DataFrame) -> bool:
    """Whether some method was pretrained for more than one length (`pretrain_steps`)."""
    if "pretrain_steps" not in records:
        return False
    frame = with_methods(records)
    steps = pd.to_numeric(frame["pretrain_steps"], errors="coerce")
    return bool((steps.groupby(frame["method"]).nunique() > 1).any())


def sweep_plot(records: pd.DataFrame, out: str | Path, panels: list[dict], names: Names = Names(),
               scale: float = 100.0) -> Path | None:
    """Transfer against pretraining length: one panel per entry {title, protocol, metric}, one
    line per method (mean ± std over seeds at each `pretrain_steps`; no bar for one seed), steps
    on a symlog axis so 0 steps (no pretraining) sits beside the long runs; one legend, right of
    the panels. None unless `swept(records)` and some panel has records."""
    if not swept(records):
        return None
    frame = with_methods(records)
    frame = frame.assign(pretrain_steps=pd.to_numeric(frame["pretrain_steps"], errors="coerce")).dropna(subset=["pretrain_steps"])
    panels = [p for p in panels if ((frame["protocol"] == p["protocol"]) & (frame["metric"] == p["metric"])).any()]
    if not panels:
        return None
    methods = method_order(frame["method"])
    positive = frame.loc[frame["pretrain_steps"] > 0, "pretrain_steps"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels) + 2.2, 4.0), squeeze=False,
                             layout="constrained")
    for ax, panel in zip(axes[0], panels):
        mine = frame[(frame["protocol"] == panel["protocol"]) & (frame["metric"] == panel["metric"])]
        for i, method in enumerate(methods):
            stats = mine[mine["method"] == method].groupby("pretrain_steps")["value"].agg(["mean", "std"])
            if stats.empty:
                continue
            ax.errorbar(stats.index, stats["mean"] * scale, yerr=stats["std"] * scale, capsize=3,
                        label=wrap(names.method(method), 30), **line_style(i))
        ax.set_xscale("symlog", linthresh=float(positive.min()) if not positive.empty else 1.0)
        steps = sorted(mine["pretrain_steps"].unique())
        ax.set_xticks(steps, [f"{s:.0f}" for s in steps])
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel(names.axis(panel["metric"]))
        ax.set_title(wrap(names.title(panel["title"]), 45), fontsize=10)
        ax.grid(alpha=0.3)
    shown = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}
    axes[0, -1].legend(shown.values(), shown.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle("Transfer against pretraining length (mean ± std over seeds)", fontsize=10)
    return save_figure(fig, out)
