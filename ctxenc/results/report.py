"""`ctxenc report DIR`: table.md, plots and report.md from DIR/records.csv.

Without a `report` section in the suite (DIR/suite.yaml) the report is the demo's: accuracy per
protocol. With one, it is a transfer table like the paper's Table 2:

    report:
      paper: table2                      # the paper's table (ctxenc/results/paper.py) beside ours
      columns:                           # the table's columns, from records
        - {title: classification mAP (100% labels), protocol: finetune, metric: map@100%,
           paper: VOC07 classification mAP}
      comparisons:                       # paired per-seed differences, with 95% t-intervals
        - [context_encoder/random_region/l2, random]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ctxenc.checkpoint import load_checkpoint, rebuild_model
from ctxenc.config import from_dict, read_yaml
from ctxenc.errors import UserError
from ctxenc.masks import apply_mask, sample_masks
from ctxenc.results.paper import PAPER_TABLES
from ctxenc.results.plots import bar_plot, curve_plot, inpainting_grid, scenes_figure
from ctxenc.results.records import read_records
from ctxenc.results.tables import (column_table, label_rows, difference_table, interval_table, method_order, paired_difference,
                                   paper_table, split_metric, summarize)

HEADLINE_METRICS = ("accuracy", "map", "miou")


@dataclass(frozen=True)
class ReportConfig:
    """paper: a key of PAPER_TABLES; columns: ({title, protocol, metric, paper?}, ...);
    comparisons: ((method, baseline), ...)."""

    paper: str | None = None
    columns: tuple[dict, ...] = ()
    comparisons: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.paper is not None and self.paper not in PAPER_TABLES:
            raise UserError(f"unknown paper table {self.paper!r} in the suite's report; valid: {', '.join(PAPER_TABLES)}.")
        for col in self.columns:
            if not {"title", "protocol", "metric"} <= set(col):
                raise UserError(f"report column {col} needs a title, a protocol and a metric.")


def write_report(out_dir: str | Path, data_root=None) -> Path:
    out_dir = Path(out_dir)
    records = read_records(out_dir / "records.csv")
    if records.empty:
        raise UserError(f"{out_dir / 'records.csv'} has no records; run 'ctxenc bench' or 'ctxenc evaluate --out {out_dir}' first.")
    if (records["protocol"] == "inpainting").all():
        from ctxenc.results.inpainting import write_inpainting_report

        return write_inpainting_report(out_dir, records, data_root)
    suite = read_yaml(out_dir / "suite.yaml") if (out_dir / "suite.yaml").is_file() else {}
    cfg = from_dict(ReportConfig, suite.get("report"), f"report of {out_dir / 'suite.yaml'}")
    if cfg.columns:
        return write_transfer_report(out_dir, records, cfg, suite, data_root)
    table = paper_table(records).to_markdown(disable_numparse=True)
    intervals = interval_table(records).to_markdown(index=False, disable_numparse=True)
    differences = difference_table(records).to_markdown(index=False, disable_numparse=True)
    (out_dir / "table.md").write_text(
        f"{table}\n\nMean ± std (ddof 1) over seeds, accuracy in %.\n\n{intervals}\n\n"
        f"Paired per-seed differences (points) with 95% t intervals:\n\n{differences}\n"
    )
    bar_plot(records, out_dir / "bars.png")
    lines = [
        f"# ctxenc results: {', '.join(records['suite'].dropna().astype(str).unique()) or out_dir.name}",
        "",
        *limit_warning(out_dir),
        f"Dataset `{records['dataset'].iloc[0]}`, encoder `{records['encoder'].iloc[0]}`; "
        f"every number is over seeds {sorted(records['seed'].unique().tolist())}, which vary pretraining and "
        "evaluation together, measured on the test split; the probe's regularisation was chosen on a "
        "validation split carved from train. Raw rows: [records.csv](records.csv); tables: [table.md](table.md).",
        "",
        "## Accuracy (%), mean ± std over seeds",
        "",
        table,
        "",
        "![accuracy by pretraining](bars.png)",
        "",
        "## How sure: 95% t intervals",
        "",
        intervals,
        "",
        "## The paper's shape: context encoder > autoencoder > random init?",
        "",
        "Paired per-seed differences in accuracy points; a difference is *outside seed noise* when its "
        "95% t interval excludes zero (with n seeds the interval uses t with n − 1 degrees of freedom, "
        "so with 2 seeds it is wide).",
        "",
        differences,
        "",
        *ranking_lines(records),
    ]
    lines += inpainting_section(out_dir, records, data_root)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir / "report.md"


def run_limit(out_dir: Path) -> int | None:
    """The --limit a suite ran with (bench writes run.json), None for a full run."""
    marker = out_dir / "run.json"
    return json.loads(marker.read_text()).get("limit") if marker.is_file() else None


def limit_warning(out_dir: Path) -> list[str]:
    """A run made with --limit checks the plumbing: say so before any number."""
    limit = run_limit(out_dir)
    if not limit:
        return []
    return [f"**This run used `--limit {limit}`: {limit} images per split, the first seed and a few training steps per cell. "
            "Its numbers check that the suite runs end to end; they say nothing about the methods.**", ""]


def write_transfer_report(out_dir: Path, records: pd.DataFrame, cfg: ReportConfig, suite: dict, data_root=None) -> Path:
    """A Table-2-style report: our table, the paper's beside it, paired comparisons, curves, figures."""
    columns = [dict(c) for c in cfg.columns]
    table = column_table(records, columns)
    (out_dir / "table.md").write_text(table.to_markdown() + "\n")
    bar_plot(records, out_dir / "bars.png", panels=columns)
    seeds = sorted(records["seed"].unique().tolist())
    lines = [
        f"# ctxenc results: {', '.join(records['suite'].dropna().astype(str).unique())}",
        "",
        *limit_warning(out_dir),
        f"{describe_data(records, suite)}, encoder "
        f"`{records['encoder'].iloc[0]}`, seeds {seeds}. Every number is the mean ± std over seeds "
        "(std with ddof = 1) on the test split, in %; learning rates, epochs and probe penalties were "
        "chosen on validation splits carved from train. Pretraining saw the train images only. "
        "Raw rows: [records.csv](records.csv); the suite: [suite.yaml](suite.yaml).",
    ]
    scenes = write_scenes_figure(out_dir, suite.get("dataset"), data_root)
    if scenes:
        lines += ["", "## The data", "", "Test scenes with their boxes (top) and class maps (bottom):", "",
                  f"![sample scenes]({scenes.name})"]
    lines += ["", "## Our table", "", table.to_markdown(), "", "![bars](bars.png)"]
    if cfg.paper:
        ours = (f"ours are `{records['encoder'].iloc[0]}` pretrained on "
                f"{', '.join(f'`{d}`' for d in records['pretrain_dataset'].dropna().unique()) or 'the same data'}, "
                f"evaluated on {', '.join(f'`{d}`' for d in records['dataset'].unique())}")
        lines += ["", "## The paper's table beside ours", "", beside_paper(table, columns, cfg.paper).to_markdown(), "",
                  "The paper's numbers are AlexNet on PASCAL VOC (227 px, 14 hours of pretraining on a GPU); "
                  f"{ours}. Unless this suite ran in full on the paper's data, compare the shape (who beats "
                  "whom, by how much relative to the spread), not the values."]
    if cfg.comparisons:
        lines += ["", "## The paper's questions, answered (paired per-seed differences, 95% t-intervals)", "",
                  "A gap is outside seed noise when its 95% interval excludes 0. Where the paper has both "
                  "rows, its own gap is given for comparison.", "",
                  *comparison_lines(records, columns, cfg.comparisons, cfg.paper)]
    curves = write_curves(out_dir, records)
    if curves:
        lines += ["", "## Curves", ""] + [f"![{title}]({path.name})" for title, path in curves]
        lines += ["", *qualified_tables(records)]
    chosen = chosen_table(records)
    if not chosen.empty:
        lines += ["", "## Chosen on the validation split (seed by seed)", "", describe_training(suite), "",
                  chosen.to_markdown()]
    lines += inpainting_section(out_dir, records, data_root)
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir / "report.md"


def describe_data(records: pd.DataFrame, suite: dict) -> str:
    """'Dataset `x` (its options)' or, when pretraining and evaluation data differ, both."""
    evaluated = list(records["dataset"].unique())
    pretrained = [d for d in records["pretrain_dataset"].dropna().unique()] if "pretrain_dataset" in records else []
    spec = suite.get("dataset")
    options = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "name") if isinstance(spec, dict) else ""
    text = f"Dataset `{evaluated[0]}`" + (f" ({options})" if options else "")
    if len(evaluated) > 1 or (pretrained and pretrained != evaluated):
        text = (f"Pretrained on {', '.join(f'`{d}`' for d in pretrained)}, evaluated on "
                f"{', '.join(f'`{d}`' for d in evaluated)}" + (f" ({options})" if options else ""))
    return text


def beside_paper(table: pd.DataFrame, columns: list[dict], paper: str) -> pd.DataFrame:
    """Rows = the paper's methods and ours; for each column with a `paper` counterpart, paper | ours."""
    published = PAPER_TABLES[paper]
    rows = {}
    for method in method_order(set(published) | set(table.index)):
        row = {"paper row": published.get(method, {}).get("paper row", "–"),
               "pretraining time (paper)": published.get(method, {}).get("pretraining time", "–"),
               "pretraining time (ours)": table["pretraining time"].get(method, "–")}
        for col in columns:
            if "paper" in col:
                row[f"{col['paper']} (paper)"] = published.get(method, {}).get(col["paper"], "–")
                row[f"{col['title']} (ours)"] = table[col["title"]].get(method, "–")
        rows[method] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def comparison_lines(records: pd.DataFrame, columns: list[dict], comparisons, paper: str | None) -> list[str]:
    """'Does A beat B?' per comparison and column: yes / no / not distinguishable, with the paired
    difference, its 95% t-interval, the per-seed values and, where the paper has both rows, its gap."""
    published = PAPER_TABLES.get(paper, {}) if paper else {}
    lines = []
    for method, baseline in comparisons:
        lines.append(f"- Does **{method}** beat **{baseline}**?")
        for col in columns:
            d = paired_difference(records, method, baseline, col["protocol"], col["metric"])
            if d is None:
                lines.append(f"  - {col['title']}: not measured (no seed has both)")
                continue
            answer = ("**yes**, outside seed noise" if d["low"] > 0 else
                      "**no**, it is worse, outside seed noise" if d["high"] < 0 else
                      "**not distinguishable** from seed noise")
            line = (f"  - {col['title']}: {answer}: {d['mean'] * 100:+.2f} points, 95% CI [{d['low'] * 100:+.2f}, "
                    f"{d['high'] * 100:+.2f}] (per seed: {', '.join(f'{v * 100:+.2f}' for v in d['per_seed'])})")
            if "paper" in col and method in published and baseline in published:
                line += f"; paper: {published[method][col['paper']] - published[baseline][col['paper']]:+.1f} points"
            lines.append(line)
    return lines


def chosen_table(records: pd.DataFrame) -> pd.DataFrame:
    """What validation chose (seed by seed): rows = protocol + learning rate / epochs / probe penalty, columns = method."""
    frame = label_rows(records)
    chosen = frame[frame["metric"].map(lambda m: split_metric(m)[0] in ("lr", "epochs", "weight_decay"))]
    if chosen.empty:
        return pd.DataFrame()
    chosen = chosen.sort_values("seed").assign(column=chosen["protocol"] + " " + chosen["metric"])
    table = chosen.groupby(["column", "method"], sort=False)["value"].agg(lambda v: " / ".join(f"{x:g}" for x in v)).unstack()
    table = table[method_order(table.columns)]
    table.index.name, table.columns.name = None, None
    return table


def describe_training(suite: dict) -> str:
    """One sentence on the pretraining schedule, from the suite."""
    train = suite.get("train") or {}
    dataset = suite.get("dataset")
    images = dataset.get("train_scenes") if isinstance(dataset, dict) else None
    parts = [f"{train['epochs']} epochs" if "epochs" in train else None,
             f"of {images} images" if images else None,
             f"batch {train['batch_size']}" if "batch_size" in train else None,
             f"Adam lr {train['lr']:g}" if "lr" in train else None]
    return "Pretraining: " + ", ".join(p for p in parts if p) + "." if any(parts) else ""


def qualified_families(records: pd.DataFrame) -> list[tuple[str, str, bool]]:
    """(protocol, metric, is_fraction) for every headline metric recorded as metric@qualifier."""
    families = []
    for (protocol, metric), rows in records.groupby(["protocol", records["metric"].map(lambda m: split_metric(m)[0])], sort=False):
        qualifiers = [split_metric(m)[1] for m in rows["metric"].unique()]
        if metric in HEADLINE_METRICS and all(qualifiers):
            families.append((protocol, metric, all(q.endswith("%") for q in qualifiers)))
    return families


def write_curves(out_dir: Path, records: pd.DataFrame) -> list[tuple[str, Path]]:
    """Label-fraction curves and layer-wise curves, one PNG per (protocol, metric) family."""
    curves = []
    for protocol, metric, fractions in qualified_families(records):
        kind = "label_fraction" if fractions else "layerwise"
        title = (f"{protocol}: {metric} against the fraction of training labels" if fractions
                 else f"{protocol}: {metric} of a linear probe at each encoder stage")
        path = curve_plot(records, out_dir / f"{kind}-{protocol}.png", protocol, metric,
                          "labelled training images" if fractions else "encoder stage", title)
        curves.append((title, path))
    return curves


def qualified_tables(records: pd.DataFrame) -> list[str]:
    """The numbers behind the curves: method x qualifier, mean ± std."""
    summary = summarize(records)
    lines = []
    for protocol, metric, _ in qualified_families(records):
        rows = summary[(summary["protocol"] == protocol) & summary["metric"].str.startswith(metric + "@")].copy()
        rows["cell"] = [f"{m * 100:.1f} ± {s * 100:.1f}" for m, s in zip(rows["mean"], rows["std"])]
        rows["q"] = rows["metric"].str.partition("@")[2]
        order = list(dict.fromkeys(records[(records["protocol"] == protocol) & records["metric"].str.startswith(metric + "@")]["metric"].str.partition("@")[2]))
        pivot = rows.pivot(index="method", columns="q", values="cell")[order]
        pivot = pivot.loc[method_order(pivot.index)]
        pivot.columns.name = None
        lines += [f"{protocol}, {metric} (%):", "", pivot.to_markdown(), ""]
    return lines


def write_scenes_figure(out_dir: Path, dataset, data_root=None, n: int = 10) -> Path | None:
    """Sample test scenes with boxes and class maps, for datasets that have them."""
    from ctxenc.data import eval_splits, load_dataset
    from ctxenc.data.fashion_mnist import CLASSES

    if dataset is None:
        return None
    data = load_dataset(dataset, eval_splits(dataset)[1], data_root, limit=n)
    if data.class_maps is None or data.boxes is None:
        return None
    return scenes_figure(data.images[:n], data.class_maps[:n], data.boxes[:n], list(CLASSES), out_dir / "scenes.png")


def ranking_lines(records: pd.DataFrame, metric: str = "accuracy") -> list[str]:
    """One line per protocol: methods ranked by mean `metric`."""
    summary = summarize(records)
    summary = summary[summary["metric"] == metric]
    lines = []
    for protocol, rows in summary.groupby("protocol", sort=False):
        ranked = rows.sort_values("mean", ascending=False)
        lines.append(f"- **{protocol}**: " + " > ".join(f"{m} ({v * 100:.1f})" for m, v in zip(ranked["method"], ranked["mean"])))
    return lines


def inpainting_section(out_dir: Path, records: pd.DataFrame, data_root=None) -> list[str]:
    """The report's inpainting figure, or one line saying why there is none."""
    try:
        figure = write_inpainting_figure(out_dir, records, data_root, run_limit(out_dir))
    except UserError as err:  # e.g. pretraining data without held-out images: the report says why
        return ["", f"No inpainting figure: {err}"]
    if figure is None:
        return []
    return ["", "## Inpainting by the context encoders (test images, first seed)", "", f"![inpainting]({figure.name})"]


def write_inpainting_figure(out_dir: Path, records: pd.DataFrame, data_root=None, limit: int | None = None,
                            n: int = 8) -> Path | None:
    """Masked input / completion / original for each context-encoder checkpoint of the first seed,
    on held-out images of its pretraining data (the first `limit` of them, if given)."""
    from ctxenc.data import eval_splits
    from ctxenc.evaluation import prepared_split

    seed = int(records["seed"].min())
    rows = []
    for name in sorted(set(records[(records["pretext"] == "context_encoder") & (records["seed"] == seed)]["checkpoint"])):
        path = out_dir / name  # relative to the results folder (absolute paths stay absolute)
        if not path.is_file():
            continue
        ckpt = load_checkpoint(path)
        model = rebuild_model(ckpt).eval()
        dataset = ckpt["data"]["dataset"]
        images, _ = prepared_split(dataset, eval_splits(dataset)[1], data_root, ckpt["data"]["input_size"], limit)
        x = images[:: max(1, len(images) // n)][:n]
        masks = sample_masks(model.cfg.mask, len(x), x.shape[-1], torch.Generator().manual_seed(seed), **model.cfg.mask_options(x.shape[-1]))
        masked = apply_mask(x, masks, model.fill)
        with torch.no_grad():
            completed = torch.where(masks, model(masked), x)
        label = f"{ckpt['pretext']['mask']}/{'l2+adv' if ckpt['pretext']['adversarial'] else 'l2'}"
        rows.append((label, highlight(masked, masks), completed, x))
    if not rows:
        return None
    return inpainting_grid(rows, out_dir / "inpainting.png")


def highlight(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Grey images (N, 1, S, S) -> RGB with the hidden pixels drawn in red, so the hole is visible."""
    rgb = images.expand(-1, 3, -1, -1).clone() if images.shape[1] == 1 else images.clone()
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand_as(rgb)
    return torch.where(masks, red, rgb)
