"""The report's questions, "does A beat B on this column?", answered as families of paired tests.

Each (comparison, column) is a paired t-test over the seeds both methods have; the p-values of
all those with at least MIN_SEEDS_FOR_TEST seeds are adjusted together with Holm's step-down
procedure. A suite may pre-declare its primary tests (the claims it was run to test): they form
their own Holm family and every other test a second, exploratory one, so a large table of
secondary questions does not drown the few the experiment was designed for. A verdict is given
at the budget that was run (pretraining length, seeds), and a method that does not beat a
trivial reference is never called better.

Two guards keep a verdict honest about what the design could see:

- A positive control per column (the suite's `report: controls:`), supervised pretraining minus
  random init, tested as a Holm family of its own across the columns. A column carries verdicts
  only if its control is significant and at least a declared fraction of the paper's own gap for
  that pair; a column where even supervised features barely beat none is "insensitive at this
  budget" and answers no question.
- The minimum detectable effect (MDE) of each test: the smallest true gap its paired t-test
  detects with 80% power given the observed seed spread of its differences, at alpha / m, the
  first (strictest) step of Holm's procedure over its family of m tests, so it is conservative.
  "No difference" is a verdict only where the MDE is below the paper's gap; elsewhere it reads
  "inconclusive".
"""

from __future__ import annotations

import math

import pandas as pd

from ctxenc.results.paper import PaperTable
from ctxenc.results.records import with_methods
from ctxenc.results.references import not_beaten, reference_values
from ctxenc.results.stats import (MIN_SEEDS_FOR_TEST, holm_adjust, minimum_detectable_effect, paired_t_pvalue,
                                  t_interval)
from ctxenc.results.tables import method_order

ALPHA = 0.05
POWER = 0.8
FIELDS = ["method", "baseline", "title", "protocol", "metric", "family", "n", "difference", "ci_low", "ci_high",
          "per_seed", "sd", "p", "p_holm", "family_size", "mde", "paper_gap", "method_mean"]
CONTROL_FIELDS = FIELDS + ["threshold", "fraction_of_paper", "passed", "status"]


def default_comparisons(methods) -> list[tuple[str, str]]:
    """Every method against `random` and against `autoencoder` (those present), as the demo asks."""
    methods = method_order(methods)
    pairs = []
    for baseline in ("random", "autoencoder"):
        if baseline in methods:
            pairs += [(m, baseline) for m in methods if m != baseline and (m, baseline) not in pairs
                      and (baseline, m) not in pairs]
    return pairs


def compare(records: pd.DataFrame, columns: list[dict], comparisons, primary=(),
            paper: PaperTable | None = None) -> pd.DataFrame:
    """One row per (comparison, column) that has a shared seed: `method` − `baseline`, paired by
    seed: n, mean difference, 95% t interval, per-seed differences and their std (sd), the paired
    t-test's p, its Holm-adjusted p within its family of `family_size` tests, the test's minimum
    detectable effect at ALPHA / family_size and POWER (mde), and the paper's gap between the two
    rows in the column's `paper` column (paper_gap); nan where n < MIN_SEEDS_FOR_TEST (not
    tested) or the paper has no such gap.

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
                         "per_seed": diff.tolist(), "sd": float(diff.std(ddof=1)) if len(diff) > 1 else math.nan,
                         "p": p, "paper_gap": paper_gap(paper, method, baseline, col.get("paper")),
                         "method_mean": float(by_seed[method].mean())})
    result = pd.DataFrame(rows, columns=FIELDS)
    result = result.sort_values("family", key=lambda f: f != "primary", kind="stable").reset_index(drop=True)
    for _, index in result.groupby("family").groups.items():
        result.loc[index, "p_holm"] = holm_adjust(result.loc[index, "p"])
        m = int(result.loc[index, "p"].notna().sum())
        result.loc[index, "family_size"] = m
        result.loc[index, "mde"] = [minimum_detectable_effect(sd, n, ALPHA / m, POWER) if not math.isnan(p) else math.nan
                                    for sd, n, p in zip(result.loc[index, "sd"], result.loc[index, "n"],
                                                        result.loc[index, "p"])]
    return result.astype({"p_holm": float, "mde": float, "family_size": float})


def paper_gap(paper: PaperTable | None, method: str, baseline: str, column: str | None) -> float:
    """The paper's `method` − `baseline` in its `column` (points), or nan where it lacks either row."""
    if paper is None or not column:
        return math.nan
    mine, theirs = paper.value(method, column), paper.value(baseline, column)
    return math.nan if mine is None or theirs is None else mine - theirs


def positive_controls(records: pd.DataFrame, columns: list[dict], control: tuple[str, str], min_fraction: float,
                      paper: PaperTable | None = None, scale: float = 100.0) -> pd.DataFrame:
    """The control `method` − `baseline` (supervised − random init) in every column, one row per
    column in `columns`' order, as `compare` gives it, Holm-adjusted as a family of its own
    ("control"), plus: threshold, `min_fraction` of the paper's gap in points (nan where the paper
    has no gap: then significance alone decides); fraction_of_paper, the mean difference over the
    paper's gap; passed; status: "passes", "insensitive at this budget", "not measured" (a row is
    missing) or "not tested (2 seeds)".

    A column that does not pass carries no verdict: if the strongest features this benchmark makes
    barely beat none there, a smaller gap between two pretexts cannot show in it either.
    """
    found = compare(records, columns, [tuple(control)], paper=paper).assign(family="control").set_index("title")
    rows = []
    for col in columns:
        if col["title"] not in found.index:
            rows.append({**dict.fromkeys(CONTROL_FIELDS, math.nan), "method": control[0], "baseline": control[1],
                         "title": col["title"], "protocol": col["protocol"], "metric": col["metric"],
                         "family": "control", "n": 0, "per_seed": [], "passed": False,
                         "status": "not measured"})
            continue
        row = found.loc[col["title"]].to_dict()
        gap = row["paper_gap"]
        threshold = min_fraction * gap if not math.isnan(gap) else math.nan
        fraction = row["difference"] * scale / gap if not math.isnan(gap) and gap != 0 else math.nan
        if math.isnan(row["p_holm"]):
            passed, status = False, f"not tested ({row['n']} seed{'s' if row['n'] != 1 else ''})"
        else:
            passed = bool(row["p_holm"] < ALPHA and row["difference"] > 0
                          and (math.isnan(threshold) or row["difference"] * scale >= threshold))
            status = "passes" if passed else "insensitive at this budget"
        rows.append({**row, "title": col["title"], "threshold": threshold, "fraction_of_paper": fraction,
                     "passed": passed, "status": status})
    return pd.DataFrame(rows, columns=CONTROL_FIELDS)


def family_sentence(results: pd.DataFrame) -> str:
    """How the families were tested and what the MDE means, for the report."""
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
    mde = (f"Each tested gap gives its **minimum detectable effect** (MDE): the smallest true gap its paired t-test "
           f"detects with {POWER:.0%} power, given the observed seed spread of its differences, at alpha {ALPHA:g} / m, "
           "the first and strictest step of Holm's procedure over its family of m tests (so the MDE is conservative). "
           "A gap that is not significant is \"no difference\" only where the MDE is below the paper's gap for the same "
           "two rows; elsewhere it is **inconclusive**: the design could have missed a gap of the paper's size.")
    return (f"Each answer is a paired t-test over the seeds both rows have; {families}. With fewer than "
            f"{MIN_SEEDS_FOR_TEST} seeds a gap is reported without a test or a mark. {mde} " + budget)


def verdict(row: pd.Series, references: dict[str, float], control: pd.Series | None = None,
            scale: float = 100.0) -> str:
    """'**yes** at this budget', '**no**, worse at this budget', '**no difference** ...' (the MDE is
    below the paper's gap), '**inconclusive** ...' (it is not, or the paper has no gap), 'not tested
    (2 seeds)', 'does not beat the class prior' when `method` falls short of a reference, or 'no
    verdict' when the column's positive `control` (a `positive_controls` row) did not pass."""
    if control is not None and not control["passed"]:
        if control["status"] == "insensitive at this budget":
            return "no verdict: the column is **insensitive at this budget** (its control fails)"
        return f"no verdict: the column's control is {control['status']}"
    short = not_beaten(row["method_mean"], references)
    if short:
        return "; ".join(f"**does not beat the {name}** ({row['method_mean'] * scale:.1f} vs {value * scale:.1f})"
                         for name, value in short)
    if math.isnan(row["p_holm"]):
        return f"not tested ({row['n']} seed{'s' if row['n'] != 1 else ''})"
    if row["p_holm"] < ALPHA:
        return "**yes** at this budget" if row["difference"] > 0 else "**no**, worse at this budget"
    mde, gap = row["mde"] * scale, abs(row["paper_gap"])
    if math.isnan(gap):
        return f"**inconclusive** at this budget (MDE {mde:.1f} points; the paper has no gap to size it against)"
    if mde < gap:
        return f"**no difference** as large as the paper's at this budget (MDE {mde:.1f} < {gap:.1f} points)"
    return f"**inconclusive** at this budget (MDE {mde:.1f} ≥ the paper's {gap:.1f} points)"


def comparison_lines(records: pd.DataFrame, results: pd.DataFrame, controls: pd.DataFrame | None = None,
                     scale: float = 100.0) -> list[str]:
    """'- Does A beat B?' then one line per column: verdict, gap, interval, p-values, MDE, per-seed
    gaps and, where the paper has both rows, the paper's gap. With `controls` (`positive_controls`),
    a column whose control did not pass lists its tests without a verdict."""
    by_title = controls.set_index("title") if controls is not None else None
    lines = []
    for (family, method, baseline), rows in results.groupby(["family", "method", "baseline"], sort=False):
        lines.append(f"- Does **{method}** beat **{baseline}**?" + {"primary": " (primary)", "exploratory": " (exploratory)"}
                     .get(family, ""))
        for _, row in rows.iterrows():
            refs = reference_values(records, row["protocol"], row["metric"])
            ci = ("" if math.isnan(row["ci_low"]) else
                  f", 95% CI [{row['ci_low'] * scale:+.2f}, {row['ci_high'] * scale:+.2f}]")
            tested = "" if math.isnan(row["p"]) else (
                f", p = {row['p']:.3g}, Holm-adjusted p = {row['p_holm']:.3g}, MDE {row['mde'] * scale:.2f} "
                f"(80% power, alpha {ALPHA:g}/{row['family_size']:.0f})")
            control = by_title.loc[row["title"]] if by_title is not None and row["title"] in by_title.index else None
            line = (f"  - {row['title']}: {verdict(row, refs, control, scale)}: {row['difference'] * scale:+.2f} "
                    f"points{ci}{tested} (per seed: {', '.join(f'{v * scale:+.2f}' for v in row['per_seed'])})")
            if not math.isnan(row["paper_gap"]):
                line += f"; paper: {row['paper_gap']:+.1f} points"
            lines.append(line)
    return lines


def control_table(controls: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """The positive controls as a table, one row per column: the control's gap, interval, seeds,
    Holm p, the paper's gap, the fraction of it reached, the gap needed and the status."""
    def num(value, fmt):
        return "–" if pd.isna(value) else format(value, fmt)
    return pd.DataFrame({
        "column": controls["title"],
        "control": controls["method"] + " − " + controls["baseline"],
        "difference": [num(d * scale, "+.2f") for d in controls["difference"]],
        "95% CI": ["–" if pd.isna(lo) else f"[{lo * scale:+.2f}, {hi * scale:+.2f}]"
                   for lo, hi in zip(controls["ci_low"], controls["ci_high"])],
        "seeds": controls["n"].astype(int).astype(str),
        "Holm p": [num(p, ".3g") for p in controls["p_holm"]],
        "paper's gap": [num(g, "+.1f") for g in controls["paper_gap"]],
        "of the paper's gap": [num(f, ".0%") for f in controls["fraction_of_paper"]],
        "needed": [num(t, "+.1f") for t in controls["threshold"]],
        "status": controls["status"],
    }).set_index("column")


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
        "MDE": ["–" if math.isnan(m) else f"{m * scale:.2f}" for m in results["mde"]],
        "paper's gap": ["–" if math.isnan(g) else f"{g:+.1f}" for g in results["paper_gap"]],
    })
    return table.drop(columns="family") if (results["family"] == "all").all() else table
