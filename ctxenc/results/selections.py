"""What validation chose (learning rate, epochs, probe penalty), seed by seed, and which choices
landed on the edge of their grid: a selection on an edge says the grid, not the data, decided,
unless the chosen rate won validation by a hair (its recorded `lr_margin`): then the rates tie."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctxenc.results.records import split_metric, with_methods
from ctxenc.results.tables import method_order

CHOSEN = ("lr", "epochs", "weight_decay")
# A chosen value's grid bounds, as evaluators record them: (lower bound, upper bound) metric names.
BOUNDS = {"lr": ("lr_min", "lr_max"), "epochs": (None, "max_epochs")}


def chosen_table(records: pd.DataFrame) -> pd.DataFrame:
    """Rows = "protocol selection" (e.g. "finetune lr@10%"), columns = method, cells = the
    values chosen for each seed, " / "-separated in seed order."""
    frame = with_methods(records)
    chosen = frame[frame["metric"].map(lambda m: split_metric(m)[0] in CHOSEN)]
    if chosen.empty:
        return pd.DataFrame()
    chosen = chosen.sort_values("seed", kind="stable").assign(column=chosen["protocol"] + " " + chosen["metric"])
    table = chosen.groupby(["column", "method"], sort=False)["value"].agg(lambda v: " / ".join(f"{x:g}" for x in v)).unstack()
    table = table[method_order(table.columns)].fillna("–")
    table.index.name, table.columns.name = None, None
    return table


def _value(cell: pd.DataFrame, name: str | None, qualifier: str | None) -> float:
    """The value of metric `name` (`lr_max@10%`, else `lr_max`) among one cell's rows, nan if absent."""
    if name is None:
        return np.nan
    for candidate in ([f"{name}@{qualifier}", name] if qualifier else [name]):
        values = cell.loc[cell["metric"] == candidate, "value"]
        if not values.empty:
            return float(values.iloc[0])
    return np.nan


def edge_selections(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (protocol, selection) whose grid bounds are recorded: runs (cells that chose
    it), at_low and at_high (how many chose the lower / upper bound), `where`, the "method seed k"
    of each run on an edge, with "(by m)" where a learning rate's margin on validation over the
    best other rate was recorded (m in points: the score x 100), and `margins`, how many were."""
    frame = with_methods(records)
    rows = []
    for (protocol, metric), chosen in frame.groupby(["protocol", "metric"], sort=False):
        base, qualifier = split_metric(metric)
        if base not in BOUNDS:
            continue
        low_name, high_name = BOUNDS[base]
        runs = at_low = at_high = margins = 0
        where = []
        for (method, seed), cell_chosen in chosen.groupby(["method", "seed"], sort=False):
            cell = frame[(frame["protocol"] == protocol) & (frame["method"] == method) & (frame["seed"] == seed)]
            low, high = _value(cell, low_name, qualifier), _value(cell, high_name, qualifier)
            if np.isnan(low) and np.isnan(high):
                continue  # older records: the grid was not recorded
            if np.isclose(low, high):
                continue  # a one-value grid: fixed, not searched, so no edge to land on
            value = float(cell_chosen["value"].iloc[0])
            runs += 1
            on_low, on_high = bool(np.isclose(value, low)), bool(np.isclose(value, high))
            at_low, at_high = at_low + on_low, at_high + on_high
            if on_low or on_high:
                margin = _value(cell, "lr_margin", qualifier) if base == "lr" else np.nan
                margins += not np.isnan(margin)
                where.append(f"{method} seed {seed:g}" + ("" if np.isnan(margin) else f" (by {100 * margin:.1f})"))
        if runs:
            rows.append({"protocol": protocol, "selection": metric, "runs": runs, "at_low": at_low, "at_high": at_high,
                         "where": where, "margins": margins})
    return pd.DataFrame(rows, columns=["protocol", "selection", "runs", "at_low", "at_high", "where", "margins"])


def edge_lines(edges: pd.DataFrame) -> list[str]:
    """'- finetune, lr@10%: on the grid's edge in 3 of 18 runs (lowest value 1, highest value 2: ...)' per
    selection that has any run on an edge, or one line saying none did."""
    lines = []
    for _, row in edges.iterrows():
        on_edge = row["at_low"] + row["at_high"]
        if not on_edge:
            continue
        sides = ", ".join(f"{label} {count}" for label, count in
                          (("lowest value", row["at_low"]), ("highest value", row["at_high"])) if count)
        lines.append(f"- {row['protocol']}, {row['selection']}: on the grid's edge in {on_edge} of {row['runs']} "
                     f"runs ({sides}: {', '.join(row['where'])})")
    if edges["margins"].any():
        lines.append("- (by m): the chosen learning rate's best validation score was m points above the best of "
                     "the other rates; a margin within seed noise says the rates nearly tie, not that the grid "
                     "is too narrow.")
    if not lines and not edges.empty:
        lines.append(f"- No selection landed on its grid's edge ({int(edges['runs'].sum())} selections checked).")
    return lines
