"""Tables derived from records with pandas: mean ± std over seeds per method and column, the
trivial references beside them, the curves' numbers, the paper's table beside ours; written
as Markdown (table.md) and LaTeX (table.tex). A cell of one seed reads "38.0 (n = 1)": its spread
is unknown, not zero, so it gets no "±"."""

from __future__ import annotations

from pathlib import Path

import re

import pandas as pd

from ctxenc.io import atomic_write_text
from ctxenc.results.names import Names
from ctxenc.results.paper import PaperTable
from ctxenc.results.records import split_metric, with_methods
from ctxenc.results.references import reference_values
from ctxenc.results.stats import t_interval

HEADLINE_METRICS = ("accuracy", "map", "miou")
# Rows in the paper's order: the supervised reference first, the context encoder last.
PRETEXT_ORDER = ["supervised", "random", "autoencoder", "rotation", "colorization", "context_prediction", "context_encoder"]


def method_order(methods) -> list[str]:
    """Methods sorted by pretext (PRETEXT_ORDER, unknown ones last), then by label."""
    def key(method: str):
        pretext = method.split("/")[0]
        return (PRETEXT_ORDER.index(pretext) if pretext in PRETEXT_ORDER else len(PRETEXT_ORDER), method)
    return sorted(set(methods), key=key)


def final_budget(records: pd.DataFrame) -> pd.DataFrame:
    """Records with `method` filled, keeping each method's rows at its largest `pretrain_steps`:
    a pretraining-length sweep has several lengths per method, and tables and comparisons are made
    at the longest (the sweep plot shows the others). Rows without steps (old records) all stay."""
    frame = with_methods(records)
    steps = pd.to_numeric(frame["pretrain_steps"], errors="coerce") if "pretrain_steps" in frame else None
    if steps is None or steps.isna().all():
        return frame
    longest = steps.groupby(frame["method"]).transform("max")
    return frame[steps.isna() | (steps == longest)]


def summarize(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, protocol, metric): mean, std (ddof 1; nan for one value, whose spread
    is unknown), n and the 95% t interval."""
    rows = []
    for (method, protocol, metric), values in with_methods(records).groupby(["method", "protocol", "metric"])["value"]:
        mean, low, high = t_interval(values)
        rows.append({"method": method, "protocol": protocol, "metric": metric, "mean": mean,
                     "std": values.std(ddof=1), "n": len(values), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["method", "protocol", "metric", "mean", "std", "n", "ci_low", "ci_high"])


def mean_cell(mean: float, std: float, n: int, digits: int = 1) -> str:
    """'38.0 ± 0.8' over several values, '38.0 (n = 1)' for one: a single seed's spread is unknown."""
    return f"{mean:.{digits}f} (n = 1)" if n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def headline_columns(records: pd.DataFrame, names: Names = Names()) -> list[dict]:
    """Report columns {title, protocol, metric} for every headline metric the records hold, in
    recorded order, titled by their human names ("Linear probe: accuracy"): what a suite without
    a `report` section gets."""
    pairs = records[["protocol", "metric"]].drop_duplicates()
    return [{"title": names.column(protocol, metric), "protocol": protocol, "metric": metric}
            for protocol, metric in zip(pairs["protocol"], pairs["metric"]) if split_metric(metric)[0] in HEADLINE_METRICS]


def column_table(records: pd.DataFrame, columns: list[dict], scale: float = 100.0) -> pd.DataFrame:
    """Rows = methods, then the trivial references any column has ("class prior (reference)").
    Columns: pretraining time, pretraining steps (when recorded), seeds, then one "mean ± std"
    column per entry of `columns` ({title, protocol, metric}), values scaled by `scale` (to %)."""
    frame = with_methods(records)
    summary = summarize(frame).set_index(["method", "protocol", "metric"])
    methods = method_order(frame["method"])
    table = pd.DataFrame(index=pd.Index(methods, name=None))
    seconds = pd.to_numeric(frame["pretrain_seconds"], errors="coerce").groupby(frame["method"]).mean()
    table["pretraining time"] = [f"{seconds[m]:.0f} s" if pd.notna(seconds[m]) else "–" for m in methods]
    steps = pd.to_numeric(frame.get("pretrain_steps"), errors="coerce") if "pretrain_steps" in frame else None
    if steps is not None and steps.notna().any():
        by_method = steps.groupby(frame["method"]).agg(lambda s: ", ".join(f"{v:.0f}" for v in sorted(s.dropna().unique())))
        table["pretraining steps"] = [by_method[m] or "–" for m in methods]
    table["seeds"] = [str(frame[frame["method"] == m]["seed"].nunique()) for m in methods]
    references: dict[str, dict[str, str]] = {}
    for col in columns:
        cells = []
        for m in methods:
            key = (m, col["protocol"], col["metric"])
            cells.append(mean_cell(summary.loc[key, "mean"] * scale, summary.loc[key, "std"] * scale, summary.loc[key, "n"])
                         if key in summary.index else "–")
        table[col["title"]] = cells
        for name, value in reference_values(frame, col["protocol"], col["metric"]).items():
            references.setdefault(name, {})[col["title"]] = f"{value * scale:.1f}"
    for name, cells in references.items():
        table.loc[f"{name} (reference)"] = {c: cells.get(c, "–") for c in table.columns}
    return table


def qualified_families(records: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """(protocol, metric, is_fraction) for every headline metric recorded as metric@qualifier."""
    families = []
    bases = records["metric"].map(lambda m: split_metric(m)[0])
    for (protocol, metric), rows in records.groupby(["protocol", bases], sort=False):
        qualifiers = [split_metric(m)[1] for m in rows["metric"].unique()]
        if metric in HEADLINE_METRICS and all(qualifiers):
            families.append((protocol, metric, all(q.endswith("%") for q in qualifiers)))
    return families


def qualifiers(records: pd.DataFrame, protocol: str, metric: str) -> list[str]:
    """The qualifiers of `metric`@q in `protocol`: label fractions by value, stages as recorded."""
    mine = records[(records["protocol"] == protocol) & records["metric"].str.startswith(metric + "@")]
    found = list(dict.fromkeys(mine["metric"].str.partition("@")[2]))
    if found and all(q.endswith("%") for q in found):
        found.sort(key=lambda q: float(q[:-1]))
    return found


def qualified_table(records: pd.DataFrame, protocol: str, metric: str, scale: float = 100.0) -> pd.DataFrame:
    """The numbers behind a curve: rows = method, columns = qualifier, "mean ± std"."""
    summary = summarize(records)
    rows = summary[(summary["protocol"] == protocol) & summary["metric"].str.startswith(metric + "@")].copy()
    rows["cell"] = [mean_cell(m * scale, s * scale, n) for m, s, n in zip(rows["mean"], rows["std"], rows["n"])]
    rows["q"] = rows["metric"].str.partition("@")[2]
    pivot = rows.pivot(index="method", columns="q", values="cell")[qualifiers(records, protocol, metric)]
    pivot = pivot.loc[method_order(pivot.index)]
    pivot.columns.name, pivot.index.name = None, None
    return pivot


def beside_paper(table: pd.DataFrame, columns: list[dict], paper: PaperTable) -> pd.DataFrame:
    """The paper's rows in its order, each beside our matching rows (or "–"), then our rows it
    has no counterpart for; for each column with a `paper` key: the paper's value | ours."""
    ours = [m for m in table.index if not m.endswith("(reference)")]
    order: list[tuple[str, str | None]] = []  # (row label, our method or None)
    for row in paper.rows:
        matched = [m for m in ours if paper.row_of(m) == row]
        order += [(m, m) for m in matched] or [(f"({row})", None)]
    order += [(m, m) for m in ours if paper.row_of(m) is None]
    rows = {}
    for label, method in order:
        paper_row = paper.row_of(method) if method else label[1:-1]
        published = paper.rows.get(paper_row, {}) if paper_row else {}
        row = {"paper row": paper_row or "–", "pretraining time (paper)": published.get("pretraining time", "–"),
               "pretraining time (ours)": table.loc[method, "pretraining time"] if method else "–"}
        for col in columns:
            if "paper" in col:
                row[f"{col['paper']} (paper)"] = published.get(col["paper"], "–")
                row[f"{col['title']} (ours)"] = table.loc[method, col["title"]] if method else "–"
        rows[label] = row
    return pd.DataFrame.from_dict(rows, orient="index").astype(str)


# LaTeX's special characters, and the Unicode signs reports print that LaTeX's default set lacks.
LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
         "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
         ">": r"\textgreater{}", "|": r"\textbar{}", "±": r"$\pm$", "−": r"$-$", "–": "--", "—": "---",
         "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$"}
LATEX_PATTERN = re.compile("|".join(re.escape(c) for c in LATEX))


def latex_escape(text) -> str:
    """`text` as LaTeX prints it literally: every special character escaped in one pass (so an
    escape's own backslash is never escaped again)."""
    return LATEX_PATTERN.sub(lambda m: LATEX[m.group()], str(text))


def latex_table(caption: str, frame: pd.DataFrame) -> str:
    """One table environment: the caption, then a booktabs tabular (rules \\toprule, \\midrule,
    \\bottomrule) with the index as its first column; every cell, header and the caption escaped."""
    def line(cells) -> str:
        return " & ".join(latex_escape(c) for c in cells) + r" \\"

    header = ["", *frame.columns]
    rows = [[index, *values] for index, values in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join([r"\begin{table}", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
                      rf"\begin{{tabular}}{{{'l' * len(header)}}}", r"\toprule", line(header), r"\midrule",
                      *(line(row) for row in rows), r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def write_tables(out_dir: Path, tables: list[tuple[str, pd.DataFrame]]) -> tuple[Path, Path]:
    """table.md and table.tex in `out_dir`: each (caption, table) in order, Markdown and LaTeX
    (booktabs tabulars, special characters escaped, ready to \\input into a paper)."""
    markdown = "\n\n".join(f"{caption}\n\n{frame.to_markdown(disable_numparse=True)}" for caption, frame in tables)
    latex = "\n".join(latex_table(caption, frame) for caption, frame in tables)
    header = "% ctxenc report: tables derived from records.csv (needs \\usepackage{booktabs})\n"
    return (atomic_write_text(out_dir / "table.md", markdown + "\n"), atomic_write_text(out_dir / "table.tex", header + latex))
