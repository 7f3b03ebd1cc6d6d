"""The paper's numbers beside ours: the `paper:` rows of a suite against its records.

A suite lists the numbers it reproduces as data (benchmarks/paper_table2.yaml):

    paper:
      - {method: context_encoder/random_region/l2, protocol: finetune, metric: mAP, value: 56.5,
         unit: "%", source: "Pathak et al. 2016, Table 2"}

`value` is what the paper prints; `unit` "%" means our fraction is shown x 100, "" as is (dB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ctxenc.config import from_dict, read_yaml
from ctxenc.results.tables import label_rows, method_order


@dataclass(frozen=True)
class PaperRow:
    method: str
    protocol: str
    metric: str
    value: float
    unit: str = "%"
    source: str = ""


def read_paper_rows(suite_file: str | Path) -> list[PaperRow]:
    path = Path(suite_file)
    if not path.is_file():
        return []
    return [from_dict(PaperRow, row, f"paper rows of {path}") for row in read_yaml(path).get("paper") or ()]


def paper_comparison(records: pd.DataFrame, rows: list[PaperRow]) -> pd.DataFrame:
    """One row per paper number: the paper's value, ours (mean ± std over seeds, n) and the gap."""
    frame = label_rows(records)
    out = []
    for row in rows:
        scale = 100.0 if row.unit == "%" else 1.0
        ours = frame[(frame["method"] == row.method) & (frame["protocol"] == row.protocol) & (frame["metric"] == row.metric)]
        values = ours["value"].astype(float) * scale
        n = len(values)
        out.append({
            "method": row.method,
            "protocol": row.protocol,
            "metric": f"{row.metric} ({row.unit})" if row.unit else row.metric,
            "paper": row.value,
            "ours": f"{values.mean():.1f} ± {values.std(ddof=1) if n > 1 else 0.0:.1f}" if n else "not run",
            "seeds": n,
            "ours − paper": round(values.mean() - row.value, 1) if n else None,
            "source": row.source,
        })
    table = pd.DataFrame(out)
    order = {m: i for i, m in enumerate(method_order(table["method"]))} if len(table) else {}
    return table.sort_values(["protocol", "metric", "method"], key=lambda c: c.map(order) if c.name == "method" else c,
                             kind="stable").reset_index(drop=True)


def ranking_lines(records: pd.DataFrame, rows: list[PaperRow]) -> list[str]:
    """For each (protocol, metric) the paper reports: its order of methods and ours, and whether they agree."""
    frame = label_rows(records)
    lines = []
    keys = list(dict.fromkeys((r.protocol, r.metric) for r in rows))
    for protocol, metric in keys:
        paper = {r.method: r.value for r in rows if (r.protocol, r.metric) == (protocol, metric)}
        ours = frame[(frame["protocol"] == protocol) & (frame["metric"] == metric) & frame["method"].isin(paper)]
        means = ours.groupby("method")["value"].mean()
        if len(means) < 2:
            continue
        # Higher is better for every metric the paper's tables list except errors (L1, L2).
        lower_better = metric.lower() in ("l1", "l2", "mean_l1", "mean_l2")
        paper_order = sorted(means.index, key=lambda m: paper[m], reverse=not lower_better)
        our_order = sorted(means.index, key=lambda m: means[m], reverse=not lower_better)
        verdict = "the same order as the paper" if paper_order == our_order else "a different order from the paper's"
        lines.append(f"- **{protocol} {metric}**: paper {' > '.join(paper_order)}; ours {' > '.join(our_order)} — {verdict}.")
    return lines


def paper_section(records: pd.DataFrame, suite_file: str | Path) -> list[str]:
    """Markdown lines for report.md; empty when the suite lists no paper numbers."""
    rows = read_paper_rows(suite_file)
    if not rows:
        return []
    table = paper_comparison(records, rows)
    return [
        "## The paper's numbers beside ours",
        "",
        "The paper's values as printed; ours are the mean ± std over seeds of the same method, protocol and "
        "metric in records.csv. Scale, data and training length differ from the paper's unless the suite ran in "
        "full on the paper's data, so compare the order of the methods before the values.",
        "",
        table.to_markdown(index=False),
        "",
        *ranking_lines(records, rows),
    ]
