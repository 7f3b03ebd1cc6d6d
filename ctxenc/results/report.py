"""`ctxenc report DIR`: table.md, table.tex, figures and report.md from DIR/records.csv.

Records that mix rows measured with and without `--limit` (the `limit` column) are refused: a
plumbing check averaged with a measurement would read as a result.

Inpainting-only records get Table 1's report (ctxenc/results/inpainting.py). Every other report
is a transfer table like the paper's Table 2, configured by the suite's `report` section
(DIR/suite.yaml):

    report:
      paper: table2                      # the paper's table (ctxenc/results/paper.py) beside ours
      columns:                           # the table's columns, from records
        - {title: classification mAP (100% labels), protocol: finetune, metric: map@100%,
           paper: VOC07 classification mAP}
      comparisons:                       # paired per-seed differences, Holm-adjusted tests
        - [context_encoder/random_region/l2, random]
      primary_comparisons:               # optional: the tests the suite was run for, declared
        - [context_encoder/random_region/l2, random]    # before it ran; comparisons x columns,
      primary_columns: [classification mAP (100% labels)]  # a Holm family of their own
      controls:                          # optional: a positive control per column, declared before
        comparison: [supervised, random] # it ran: a Holm family of its own; a column carries verdicts
        min_fraction_of_paper_gap: 0.4   # only if it is significant and >= this fraction of the
                                         # paper's gap for the pair (significance alone where the
                                         # paper has none); a column that fails is "insensitive"
      display:                           # optional: names figures print (ctxenc/results/names.py)
        context_encoder/random_region/l2: Context encoder (random region)
        classification mAP (100% labels): Classification, 100% labels

Without a section, the columns are every headline metric the records hold and every method is
compared with random init and the autoencoder. A report draws what its records hold and skips
the rest: a column nobody measured is "–", a figure without data is left out. Every figure is a PNG
(200 dpi) with a vector PDF of the same name beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ctxenc.config import from_dict, read_yaml
from ctxenc.errors import UserError
from ctxenc.io import atomic_write
from ctxenc.results import samples
from ctxenc.results.comparisons import (compare, comparison_lines, comparison_table, control_table,
                                        default_comparisons, family_sentence, positive_controls)
from ctxenc.results.figures import detections_figure, figure_link, inpainting_grid, scenes_figure
from ctxenc.results.names import Names
from ctxenc.results.paper import PAPER_TABLES
from ctxenc.results.plots import bar_plot, curve_plot, difference_plot, sweep_plot
from ctxenc.results.provenance import commit_warning, limit_warning, provenance_lines, run_limit
from ctxenc.results.records import read_records
from ctxenc.results.references import not_beaten, reference_values
from ctxenc.results.selections import chosen_table, edge_lines, edge_selections
from ctxenc.results.tables import (beside_paper, column_table, final_budget, headline_columns, method_order,
                                   qualified_families, qualified_table, summarize, write_tables)


@dataclass(frozen=True)
class ReportConfig:
    """paper: a key of PAPER_TABLES; columns: ({title, protocol, metric, paper?}, ...);
    comparisons: ((method, baseline), ...); primary_comparisons x primary_columns (titles): the
    pre-declared primary tests, Holm-adjusted apart from the exploratory rest; controls:
    {comparison: (method, baseline), min_fraction_of_paper_gap: 0.4}, the positive control every
    column must pass to carry a verdict; display: {name in records or column title: the name
    figures print}."""

    paper: str | None = None
    columns: tuple[dict, ...] = ()
    comparisons: tuple[tuple[str, str], ...] = ()
    primary_comparisons: tuple[tuple[str, str], ...] = ()
    primary_columns: tuple[str, ...] = ()
    controls: dict | None = None
    display: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.paper is not None and self.paper not in PAPER_TABLES:
            raise UserError(f"unknown paper table {self.paper!r} in the suite's report; valid: {', '.join(PAPER_TABLES)}.")
        keys = {"title", "protocol", "metric", "paper"}
        for col in self.columns:
            if not isinstance(col, dict) or not {"title", "protocol", "metric"} <= set(col):
                raise UserError(f"report column {col} needs a title, a protocol and a metric.")
            if set(col) - keys:  # e.g. a YAML flow mapping split an unquoted title at its comma
                raise UserError(f"report column {col['title']!r} has unknown key {sorted(map(str, set(col) - keys))[0]!r}; "
                                f"a column takes {', '.join(sorted(keys))} (quote a title that holds a comma).")
        titles = [col["title"] for col in self.columns]
        twice = sorted({t for t in titles if titles.count(t) > 1})
        if twice:
            raise UserError(f"two report columns are both titled {twice[0]!r}; give each column its own title.")
        for pair in self.comparisons + self.primary_comparisons:
            if len(pair) != 2:
                raise UserError(f"report comparison {pair} needs two methods: [method, baseline].")
        if bool(self.primary_comparisons) != bool(self.primary_columns):
            raise UserError("the suite's report needs both primary_comparisons and primary_columns, or neither.")
        unknown = set(self.primary_columns) - {col["title"] for col in self.columns}
        if unknown:
            raise UserError(f"primary column {sorted(unknown)[0]!r} is not one of the report's column titles.")
        if self.controls is not None:
            control = self.controls.get("comparison") if isinstance(self.controls, dict) else None
            if (not isinstance(control, (list, tuple)) or len(control) != 2
                    or set(self.controls) - {"comparison", "min_fraction_of_paper_gap"}):
                raise UserError("the report's controls take comparison: [method, baseline] (e.g. [supervised, random]) "
                                "and optionally min_fraction_of_paper_gap.")
            fraction = self.controls.get("min_fraction_of_paper_gap", 0.4)
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
                raise UserError(f"the report's controls: min_fraction_of_paper_gap must be a number from 0 to 1, got {fraction!r}.")
        for key, name in self.display.items():
            if not isinstance(key, str) or not isinstance(name, str):
                raise UserError(f"the report's display maps names to names (text); got {key!r}: {name!r}.")

    @property
    def primary(self) -> tuple[tuple[str, str, str], ...]:
        """The primary tests: (method, baseline, column title)."""
        return tuple((m, b, title) for m, b in self.primary_comparisons for title in self.primary_columns)

    @property
    def control(self) -> tuple[tuple[str, str], float] | None:
        """The positive control, ((method, baseline), minimum fraction of the paper's gap), or None."""
        if self.controls is None:
            return None
        return tuple(self.controls["comparison"]), float(self.controls.get("min_fraction_of_paper_gap", 0.4))


def write_report(results_dir: str | Path, data_root=None, out: str | Path | None = None) -> Path:
    """Write the tables, figures and report.md of `results_dir`/records.csv into `out` (default:
    `results_dir`); returns report.md's path.

    Another `out` gets a copy of records.csv, suite.yaml and run.json, so its report's links
    work; the checkpoints its figures are drawn from stay where they are.
    """
    results_dir = Path(results_dir)
    out_dir = Path(out) if out is not None else results_dir
    records = read_records(results_dir / "records.csv")
    if records.empty:
        raise UserError(f"{results_dir / 'records.csv'} has no records; run 'ctxenc bench' or 'ctxenc evaluate --out {results_dir}' first.")
    check_one_limit(records, results_dir / "records.csv")
    if out_dir.resolve() != results_dir.resolve():
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("records.csv", "suite.yaml", "run.json"):
            if (results_dir / name).is_file():
                atomic_write(out_dir / name, lambda f, name=name: f.write((results_dir / name).read_bytes()))
        # Checkpoints are recorded relative to their results folder.
        records["checkpoint"] = [str(results_dir.resolve() / c) if isinstance(c, str) and c else c for c in records["checkpoint"]]
    if (records["protocol"] == "inpainting").all():
        from ctxenc.results.inpainting import write_inpainting_report

        return write_inpainting_report(out_dir, records, data_root)
    suite = read_yaml(results_dir / "suite.yaml") if (results_dir / "suite.yaml").is_file() else {}
    cfg = from_dict(ReportConfig, suite.get("report"), f"report of {results_dir / 'suite.yaml'}")
    return write_transfer_report(out_dir, records, cfg, suite, data_root, configured="report" in suite)


def check_one_limit(records: pd.DataFrame, path: Path) -> None:
    """Refuse records that mix full rows with rows measured under --limit (or under two limits):
    a table would average a plumbing check with a measurement."""
    limits = records["limit"]
    kinds = {f"--limit {int(v)}" for v in limits.dropna()} | ({"no --limit"} if limits.isna().any() else set())
    if len(kinds) > 1:
        raise UserError(f"{path} mixes rows measured with {' and with '.join(sorted(kinds))}; a table would average them "
                        "as one measurement, so move the rows of each limit (the limit column says which) to a folder of their own.")


def limited_rows_warning(records: pd.DataFrame, out_dir: Path) -> list[str]:
    """Records measured under `ctxenc evaluate --limit` (no run.json says so): say so before any number."""
    limits = records["limit"].dropna()
    if limits.empty or limit_warning(out_dir):
        return []
    return [f"**These records were measured with `--limit {int(limits.iloc[0])}` ({int(limits.iloc[0])} images per split): "
            "they check that the evaluation runs; they say nothing about the methods.**", ""]


def write_transfer_report(out_dir: Path, records: pd.DataFrame, cfg: ReportConfig, suite: dict, data_root=None,
                          configured: bool = True) -> Path:
    """Our table (with trivial references), the paper's beside it, the comparisons as one
    Holm-adjusted families, curves, selections on grid edges, figures and provenance."""
    final = final_budget(records)
    names = Names(cfg.display)
    columns = [dict(c) for c in cfg.columns] or headline_columns(final, names)
    for col in columns:
        col["references"] = reference_values(final, col["protocol"], col["metric"])
    comparisons = cfg.comparisons if configured else default_comparisons(final["method"])
    table = column_table(final, columns)
    paper = PAPER_TABLES[cfg.paper] if cfg.paper else None
    results = compare(final, columns, comparisons, cfg.primary, paper)
    controls = positive_controls(final, columns, *cfg.control, paper) if cfg.control else None
    tables = [("Mean ± std over seeds (std with ddof = 1), in %; n = 1: one seed, its spread unknown.", table)]
    seeds = sorted(records["seed"].dropna().unique().tolist())
    lines = [
        f"# ctxenc results: {', '.join(records['suite'].dropna().astype(str).unique()) or out_dir.name}",
        "",
        *limit_warning(out_dir),
        *limited_rows_warning(records, out_dir),
        *commit_warning(records),
        f"{describe_data(records, suite)}, encoder `{records['encoder'].iloc[0]}`, seeds {seeds}. Every number is the "
        "mean ± std over seeds (std with ddof = 1) on the test split, in %; a number from one seed reads \"n = 1\" "
        "and has no ±: its spread is unknown, not zero. Seeds vary pretraining and evaluation together. Learning "
        "rates, epochs and probe penalties were chosen on validation splits carved from train. "
        "Raw rows: [records.csv](records.csv); tables: [table.md](table.md), [table.tex](table.tex)"
        + ("; the suite: [suite.yaml](suite.yaml)" if suite else "")
        + ". Each figure drawn here is a PNG (200 dpi) with a vector PDF of the same name beside it, for a paper.",
    ]
    scenes = samples.scene_samples(suite.get("dataset"), data_root)
    if scenes is not None and scenes.class_maps is not None and scenes.boxes is not None:
        figure = scenes_figure(scenes.images, scenes.class_maps, scenes.boxes, scenes.class_names, out_dir / "scenes.png")
        lines += ["", "## The data", "", "Test scenes with their boxes (top) and class maps (bottom):", "",
                  figure_link("sample scenes", figure)]
    lines += ["", "## Our table", "", *budget_lines(records, final), table.to_markdown()]
    marks = panel_marks(results, controls, names)
    bars = bar_plot(final, out_dir / "bars.png", columns, names, marks)
    if bars:
        lines += ["", figure_link("bars", bars)]
    differences = difference_plot(results, out_dir / "differences.png", columns, names, controls)
    if differences:
        lines += ["", "The comparisons below as paired differences (method − baseline, seed by seed, in points), each "
                  "with its 95% t interval: a gap too small to see between bars drawn from zero reads here at its "
                  "size. An interval that crosses zero is not a difference; a pair with one seed has no interval."
                  + (" Each tested gap is labelled with its MDE. The top row of each panel is its positive control, "
                     "green where it passes and red where it does not, with the gap it needs as a dashed tick; a "
                     "panel whose control fails is shaded: its column is insensitive at this budget."
                     if controls is not None else ""),
                  "", figure_link("paired differences", differences)]
    lines += reference_lines(final, columns)
    if cfg.paper:
        paper = PAPER_TABLES[cfg.paper]
        side = beside_paper(table, columns, paper)
        tables.append(("The paper's Table 2 beside ours.", side))
        ours = (f"ours are `{records['encoder'].iloc[0]}` pretrained on "
                f"{', '.join(f'`{d}`' for d in records['pretrain_dataset'].dropna().unique()) or 'the same data'}, "
                f"evaluated on {', '.join(f'`{d}`' for d in records['dataset'].unique())}")
        lines += ["", "## The paper's table beside ours", "", side.to_markdown(), "",
                  "The paper's numbers are AlexNet on PASCAL VOC (227 px, 14 hours of pretraining on a GPU); "
                  f"{ours}. Rows in parentheses are the paper's alone. Unless this suite ran in full on the paper's "
                  "data, compare the shape (who beats whom, by how much relative to the spread), not the values."]
    if controls is not None:
        tables.append(("Positive controls, one per column (points): the column carries verdicts only if it passes.",
                       control_table(controls)))
        lines += control_section(controls, cfg)
    if not results.empty:
        tables.append(("Paired per-seed differences (points), 95% t intervals, paired t-test p, Holm-adjusted p, the "
                       "minimum detectable effect (80% power, alpha 0.05 / family size) and the paper's gap.",
                       comparison_table(results)))
        lines += ["", "## The questions, answered (paired per-seed differences, Holm-adjusted)", "",
                  family_sentence(results) + " Where the paper has both rows, its own gap is given for comparison.", "",
                  *comparison_lines(final, results, controls)]
    sweep = sweep_plot(records, out_dir / "sweep.png", columns, names)
    if sweep:
        lines += ["", "## How much pretraining is enough?", "",
                  "Transfer against the number of pretraining steps (every length the records hold; the tables "
                  "above use each method's longest):", "", figure_link("pretraining sweep", sweep)]
    lines += curve_section(out_dir, final, tables, names)
    lines += detection_section(out_dir, final, suite, names, data_root)
    lines += selection_section(final, suite)
    lines += inpainting_section(out_dir, final, names, data_root)
    lines += ["", "## Provenance", "", *provenance_lines(records)]
    write_tables(out_dir, tables)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir / "report.md"


def control_section(controls: pd.DataFrame, cfg: ReportConfig) -> list[str]:
    """The positive controls, column by column, and which columns answer questions."""
    (method, baseline), fraction = cfg.control
    failed = controls.loc[~controls["passed"].astype(bool), "title"].tolist()
    return ["", "## Can each column tell good features from none? (positive controls)", "",
            f"Declared in the suite's report section: in every column, **{method}** − **{baseline}**, paired by seed, "
            "tested as a Holm family of its own across the columns. A column carries verdicts only if its control is "
            f"significant (Holm-adjusted p < 0.05) and at least {fraction:.0%} of the paper's gap for the same rows "
            "(significance alone where the paper has no gap). A column that fails is **insensitive at this budget**: "
            "its tests are listed below, not judged.", "",
            control_table(controls).to_markdown(disable_numparse=True), "",
            ("Insensitive at this budget (no verdicts): " + ", ".join(failed) + "." if failed
             else "Every column passes its control.")]


def panel_marks(results: pd.DataFrame, controls: pd.DataFrame | None, names: Names, scale: float = 100.0) -> dict:
    """{column title: (text, passed)} for the bar chart's verdict panels: the control's status and
    the MDE of the primary tests (of every test where none is primary) in that column; passed is
    whether its control passed, None without controls."""
    marks = {}
    tested = results[results["p"].notna()]
    if (tested["family"] == "primary").any():
        tested = tested[tested["family"] == "primary"]
    for title in dict.fromkeys([*tested["title"], *([] if controls is None else controls["title"])]):
        lines, passed = [], None
        if controls is not None:
            c = controls.set_index("title").loc[title]
            passed = bool(c["passed"])
            gap = "" if pd.isna(c["difference"]) else f"{c['difference'] * scale:+.1f}, "
            holm = "" if pd.isna(c["p_holm"]) else f"Holm p {c['p_holm']:.2g}, "
            share = "" if pd.isna(c["fraction_of_paper"]) else (
                f"{c['fraction_of_paper']:.0%} of the paper's {c['paper_gap']:+.1f} (needs {c['threshold']:+.1f}), ")
            lines.append(f"control {names.method(c['method'])} − {names.method(c['baseline'])}: {gap}{holm}{share}"
                         f"{c['status']}")
        lines += [f"MDE {names.method(r['method'])} − {names.method(r['baseline'])}: {r['mde'] * scale:.1f}"
                  + ("" if pd.isna(r["paper_gap"]) else f" (paper's gap {r['paper_gap']:+.1f})")
                  for _, r in tested[tested["title"] == title].iterrows()]
        marks[title] = ("\n".join(lines), passed)
    return marks


def budget_lines(records: pd.DataFrame, final: pd.DataFrame) -> list[str]:
    """A sentence when the tables keep only each method's longest pretraining of a sweep."""
    if len(final) == len(records):
        return []
    return ["Records hold several pretraining lengths per method; tables and comparisons use each method's longest "
            "(the sweep below shows all).", ""]


def describe_data(records: pd.DataFrame, suite: dict) -> str:
    """'Dataset `x` (its options)' or, when pretraining and evaluation data differ, both."""
    evaluated = list(records["dataset"].unique())
    pretrained = list(records["pretrain_dataset"].dropna().unique())
    spec = suite.get("dataset")
    options = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "name") if isinstance(spec, dict) else ""
    text = f"Dataset `{evaluated[0]}`" + (f" ({options})" if options else "")
    if len(evaluated) > 1 or (pretrained and pretrained != evaluated):
        text = (f"Pretrained on {', '.join(f'`{d}`' for d in pretrained)}, evaluated on "
                f"{', '.join(f'`{d}`' for d in evaluated)}" + (f" ({options})" if options else ""))
    return text


def reference_lines(records: pd.DataFrame, columns: list[dict]) -> list[str]:
    """Which methods do not beat a trivial reference, column by column."""
    if not any(col["references"] for col in columns):
        return []
    summary = summarize(records).set_index(["method", "protocol", "metric"])
    lines = ["", "Reference rows score without looking at the image (all background: predict background everywhere; "
             "class prior: constant scores; majority class: always the most frequent class). A method that does not "
             "beat them is not called better than anything on that column."]
    short = []
    for col in columns:
        for method in method_order(records["method"]):
            key = (method, col["protocol"], col["metric"])
            if key in summary.index:
                short += [f"- {method} does not beat the {name} on {col['title']} ({summary.loc[key, 'mean'] * 100:.1f} "
                          f"vs {value * 100:.1f})" for name, value in not_beaten(summary.loc[key, "mean"], col["references"])]
    return lines + (["", *short] if short else ["", "Every method beats every reference."])


def curve_section(out_dir: Path, records: pd.DataFrame, tables: list, names: Names) -> list[str]:
    """Label-fraction and layer-wise curves, one figure per (protocol, metric) family, with their numbers."""
    lines = []
    for protocol, metric, fractions in qualified_families(records):
        kind = "label_fraction" if fractions else "layerwise"
        what = f"{names.protocol(protocol)}: {names.metric(metric)}"
        title = (f"{what} against the fraction of training labels" if fractions
                 else f"{what} of a linear probe at each encoder stage")
        path = curve_plot(records, out_dir / f"{kind}-{protocol}.png", protocol, metric,
                          "labelled training images" if fractions else "encoder stage", title, names)
        numbers = qualified_table(records, protocol, metric)
        tables.append((f"{protocol}, {metric} (%), mean ± std over seeds (n = 1: one seed).", numbers))
        lines += [figure_link(title, path), "", f"{protocol}, {metric} (%):", "", numbers.to_markdown(), ""]
    return ["", "## Curves", "", *lines] if lines else []


def detection_section(out_dir: Path, records: pd.DataFrame, suite: dict, names: Names, data_root=None) -> list[str]:
    """Predicted and true boxes on test scenes, per detection protocol with saved predictions."""
    lines = []
    for protocol in records.loc[records["metric"] == "map_coco", "protocol"].unique():
        alt, name = f"{protocol}: predicted and true boxes", f"detections-{protocol}.png"
        predictions = samples.detection_samples(out_dir, records, protocol)
        scenes = None
        if predictions:
            n = max(len(p["boxes"]) for p in predictions.values())
            scenes = samples.scene_samples(suite.get("dataset"), data_root, n=n)
        if scenes is None or scenes.boxes is None:
            lines += kept_figure(out_dir, name, alt)
            continue
        ordered = {names.method(m): predictions[m] for m in method_order(predictions)}
        figure = detections_figure(scenes.images, scenes.boxes, ordered, scenes.class_names,
                                   out_dir / name)
        lines += [figure_link(alt, figure), ""]
    return ["", "## Detections (first seed)", "", *lines] if lines else []


def selection_section(records: pd.DataFrame, suite: dict) -> list[str]:
    """What validation chose, seed by seed, and every selection on its grid's edge."""
    chosen = chosen_table(records)
    if chosen.empty:
        return []
    edges = edge_lines(edge_selections(records))
    lines = ["", "## Chosen on the validation split (seed by seed)", "", describe_training(suite), "", chosen.to_markdown()]
    if edges:
        lines += ["", "A selection on its grid's edge (the lowest or highest learning rate, or the epoch cap) means the "
                  "grid, not the data, decided:", "", *edges]
    return lines


def describe_training(suite: dict) -> str:
    """One sentence on the pretraining schedule, from the suite."""
    train = suite.get("train") or {}
    dataset = suite.get("dataset")
    images = dataset.get("train_scenes") if isinstance(dataset, dict) else None
    parts = [f"{train['epochs']} epochs" if "epochs" in train else None,
             f"{train['max_steps']} steps" if "max_steps" in train else None,
             f"of {images} images" if images else None,
             f"batch {train['batch_size']}" if "batch_size" in train else None,
             f"Adam lr {train['lr']:g}" if "lr" in train else None]
    return "Pretraining: " + ", ".join(p for p in parts if p) + "." if any(parts) else ""


def inpainting_section(out_dir: Path, records: pd.DataFrame, names: Names, data_root=None) -> list[str]:
    """The context encoders' completions of held-out images, or one line saying why there are none."""
    try:
        rows = samples.completions(out_dir, records, data_root, run_limit(out_dir))
    except UserError as err:  # e.g. pretraining data without held-out images: the report says why
        return ["", f"No inpainting figure: {err}"]
    title = ["", "## Inpainting by the context encoders (test images, first seed)", ""]
    if not rows:
        kept = kept_figure(out_dir, "inpainting.png", "inpainting")
        return title + kept if kept else []
    figure = inpainting_grid([(names.method(label), *images) for label, *images in rows], out_dir / "inpainting.png")
    return title + [figure_link("inpainting", figure)]


def kept_figure(out_dir: Path, name: str, alt: str) -> list[str]:
    """A figure an earlier report drew from inputs this folder no longer holds (checkpoints and saved
    predictions are not committed, so a fresh clone has none): shown as it is, and said so, rather
    than dropped from the report."""
    if not (out_dir / name).is_file():
        return []
    return [figure_link(alt, out_dir / name), "",
            "Kept as an earlier report drew it: the run folders it was drawn from are not here.", ""]
