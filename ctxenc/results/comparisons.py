"""The report's questions, "does A beat B on this column?", answered as families of paired tests.

Each (comparison, column) is a paired t-test over the seeds both methods have; the p-values of
all those with at least MIN_SEEDS_FOR_TEST seeds are adjusted together with Holm's step-down
procedure. A suite may pre-declare its primary tests (the claims it was run to test): they form
their own Holm family and every other test a second, exploratory one, so a large table of
secondary questions does not drown the few the experiment was designed for. A verdict is given
at the budget that was run (pretraining length, seeds), and a method that does not beat a
trivial reference is never called better.
"""

from __future__ import annotations

import math

import pandas as pd

from ctxenc.results.paper import PaperTable
from ctxenc.results.records import with_methods
from ctxenc.results.references import not_beaten, reference_values
from ctxenc.results.stats import MIN_SEEDS_FOR_TEST, holm_adjust, paired_t_pvalue, t_interval
from ctxenc.results.tables import method_order

ALPHA = 0.05
FIELDS = ["method", "baseline", "title", "protocol", "metric", "family", "n", "difference", "ci_low", "ci_high",
          "per_seed", "p", "p_holm", "method_mean"]


def default_comparisons(methods) -> list[tuple[str, str]]:
    """Every method against `random` and against `autoencoder` (those present), as the demo asks."""
    methods = method_order(methods)
    pairs = []
    for baseline in ("random", "autoencoder"):
        if baseline in methods:
            pairs += [(m, baseline) for m in methods if m != baseline and (m, baseline) not in pairs
                      and (baseline, m) not in pairs]
    return pairs


def compare(records: pd.DataFrame, columns: list[dict], comparisons, primary=()) -> pd.DataFrame:
    """One row per (comparison, column) that has a shared seed: `method` − `baseline`, paired by
    seed: n, mean difference, 95% t interval, per-seed differences, the paired t-test's p and its
    Holm-adjusted p within its family (nan where n < MIN_SEEDS_FOR_TEST: not tested).

    primary: ((method, baseline, column title), ...), the pre-declared tests. They come first,
    as family "primary"; the rest are "exploratory". Without them every test is in family "all".
    """
    pairs = list(dict.fromkeys([(m, b) for m, b, _ in primary] + [tuple(c) for c in comparisons]))
    primary = {tuple(t) for t in primary}
    frame = with_methods(records)
    rows = []
    for method, baseline in pairs:
        for col in columns:
            family = ("primary" if (method, baseline, col["title"]) in primary else "exploratory") if primary else "all"
            mine = frame[(frame["protocol"] == col["protocol"]) & (frame["metric"] == col["metric"])]
            by_seed = mine.pivot_table(index="seed", columns="method", values="value")
            if method not in by_seed or baseline not in by_seed:
                continue
            diff = (by_seed[method] - by_seed[baseline]).dropna()
            if diff.empty:
                continue
            mean, low, high = t_interval(diff)
            p = paired_t_pvalue(diff) if len(diff) >= MIN_SEEDS_FOR_TEST else math.nan
            rows.append({"method": method, "baseline": baseline, "title": col["title"],
                         "protocol": col["protocol"], "metric": col["metric"], "family": family,
                         "n": len(diff), "difference": mean, "ci_low": low, "ci_high": high,
                         "per_seed": diff.tolist(), "p": p, "method_mean": float(by_seed[method].mean())})
    result = pd.DataFrame(rows, columns=FIELDS)
    result = result.sort_values("family", key=lambda f: f != "primary", kind="stable").reset_index(drop=True)
    for _, index in result.groupby("family").groups.items():
        result.loc[index, "p_holm"] = holm_adjust(result.loc[index, "p"])
    return result.astype({"p_holm": float})


def family_sentence(results: pd.DataFrame) -> str:
    """How the families were tested, for the report."""
    tested = results[results["p"].notna()]
    budget = "Verdicts hold at this budget (these pretraining lengths, data and seeds), not in general."
    if tested.empty:
        return (f"Each gap is paired by seed. No pair has {MIN_SEEDS_FOR_TEST} seeds, so no gap is tested or marked: "
                f"with fewer seeds the spread is too poorly known. {budget}")
    holm = (f"**Holm-adjusted** (Holm's step-down procedure, family-wise error rate {ALPHA:g})")
    counts = tested["family"].value_counts()
    if "all" in counts:
        families = (f"the {counts['all']} tests with at least {MIN_SEEDS_FOR_TEST} seeds form one family whose "
                    f"p-values are {holm}")
    else:
        primary, other = counts.get("primary", 0), counts.get("exploratory", 0)
        families = (f"the {primary} **primary** test{'s' if primary != 1 else ''}, declared in the suite before it ran, "
                    f"form one family whose p-values are {holm}; the other {other} test{'s' if other != 1 else ''} "
                    "are exploratory, Holm-adjusted as a second family of their own")
    return (f"Each answer is a paired t-test over the seeds both rows have; {families}. With fewer than "
            f"{MIN_SEEDS_FOR_TEST} seeds a gap is reported without a test or a mark. " + budget)


def verdict(row: pd.Series, references: dict[str, float], scale: float = 100.0) -> str:
    """'**yes** at this budget', '**no**, worse at this budget', 'not distinguishable at this budget',
    'not tested (2 seeds)', or 'does not beat the class prior' when `method` falls short of a reference."""
    short = not_beaten(row["method_mean"], references)
    if short:
        return "; ".join(f"**does not beat the {name}** ({row['method_mean'] * scale:.1f} vs {value * scale:.1f})"
                         for name, value in short)
    if math.isnan(row["p_holm"]):
        return f"not tested ({row['n']} seed{'s' if row['n'] != 1 else ''})"
    if row["p_holm"] < ALPHA:
        return "**yes** at this budget" if row["difference"] > 0 else "**no**, worse at this budget"
    return "**not distinguishable** at this budget"


def comparison_lines(records: pd.DataFrame, results: pd.DataFrame, paper: PaperTable | None,
                     columns: list[dict], scale: float = 100.0) -> list[str]:
    """'- Does A beat B?' then one line per column: verdict, gap, interval, p-values, per-seed
    gaps and, where the paper has both rows, the paper's gap."""
    paper_keys = {col["title"]: col.get("paper") for col in columns}
    lines = []
    for (family, method, baseline), rows in results.groupby(["family", "method", "baseline"], sort=False):
        lines.append(f"- Does **{method}** beat **{baseline}**?" + {"primary": " (primary)", "exploratory": " (exploratory)"}
                     .get(family, ""))
        for _, row in rows.iterrows():
            refs = reference_values(records, row["protocol"], row["metric"])
            ci = ("" if math.isnan(row["ci_low"]) else
                  f", 95% CI [{row['ci_low'] * scale:+.2f}, {row['ci_high'] * scale:+.2f}]")
            tested = "" if math.isnan(row["p"]) else f", p = {row['p']:.3g}, Holm-adjusted p = {row['p_holm']:.3g}"
            line = (f"  - {row['title']}: {verdict(row, refs, scale)}: {row['difference'] * scale:+.2f} points{ci}{tested} "
                    f"(per seed: {', '.join(f'{v * scale:+.2f}' for v in row['per_seed'])})")
            key = paper_keys.get(row["title"])
            if paper and key and paper.value(method, key) is not None and paper.value(baseline, key) is not None:
                line += f"; paper: {paper.value(method, key) - paper.value(baseline, key):+.1f} points"
            lines.append(line)
    return lines


def comparison_table(results: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """The family as a table (for table.md / table.tex): gap, interval, n, p and Holm p."""
    def fmt(p):
        return "–" if math.isnan(p) else f"{p:.3g}"
    table = pd.DataFrame({
        "comparison": results["method"] + " − " + results["baseline"],
        "column": results["title"],
        "family": results["family"],
        "difference": [f"{d * scale:+.2f}" for d in results["difference"]],
        "95% CI": ["–" if math.isnan(lo) else f"[{lo * scale:+.2f}, {hi * scale:+.2f}]"
                   for lo, hi in zip(results["ci_low"], results["ci_high"])],
        "seeds": results["n"].astype(str),
        "p": [fmt(p) for p in results["p"]],
        "Holm p": [fmt(p) for p in results["p_holm"]],
    })
    return table.drop(columns="family") if (results["family"] == "all").all() else table
