"""`ctxenc report DIR`: table.md, bars.png, inpainting.png and report.md from DIR/records.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from ctxenc.checkpoint import load_checkpoint, rebuild_model
from ctxenc.errors import UserError
from ctxenc.masks import apply_mask, sample_masks
from ctxenc.results.paper import paper_section
from ctxenc.results.plots import bar_plot, inpainting_grid
from ctxenc.results.records import read_records
from ctxenc.results.tables import label_rows, paper_table


def write_report(out_dir: str | Path, data_root=None) -> Path:
    out_dir = Path(out_dir)
    records = read_records(out_dir / "records.csv")
    if records.empty:
        raise UserError(f"{out_dir / 'records.csv'} has no records; run 'ctxenc bench' or 'ctxenc evaluate --out {out_dir}' first.")
    if (records["protocol"] == "inpainting").all():
        from ctxenc.results.inpainting import write_inpainting_report

        return write_inpainting_report(out_dir, records, data_root)
    table = paper_table(records)
    (out_dir / "table.md").write_text(table.to_markdown() + "\n")
    bar_plot(records, out_dir / "bars.png")
    try:
        inpainting, no_figure = write_inpainting_figure(out_dir, records, data_root, run_limit(out_dir)), None
    except UserError as err:  # e.g. pretraining data without held-out images: the report says why
        inpainting, no_figure = None, str(err)
    lines = [
        f"# ctxenc results: {', '.join(records['suite'].dropna().astype(str).unique()) or out_dir.name}",
        "",
        *limit_warning(out_dir),
        f"Dataset `{records['dataset'].iloc[0]}`, encoder `{records['encoder'].iloc[0]}`; "
        f"every number is the mean ± std over seeds {sorted(records['seed'].unique().tolist())} "
        "(std with ddof = 1), measured on the test split; the probe's regularisation was chosen on a "
        "validation split carved from train. Raw rows: [records.csv](records.csv).",
        "",
        "## Table (accuracy, %)",
        "",
        table.to_markdown(),
        "",
        "![accuracy by pretraining](bars.png)",
        "",
        "## The paper's shape: context encoder > autoencoder > random init?",
        "",
        *shape_lines(records),
    ]
    paper = paper_section(records, out_dir / "suite.yaml")
    if paper:
        lines += ["", *paper]
    if inpainting:
        lines += ["", "## Inpainting by the context encoders (test images, first seed)", "", f"![inpainting]({inpainting.name})"]
    elif no_figure:
        lines += ["", f"No inpainting figure: {no_figure}"]
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
    return [f"**This run used `--limit {limit}`: {limit} images per split and a few training steps per cell. "
            "Its numbers check that the suite runs end to end; they say nothing about the methods.**", ""]


def shape_lines(records: pd.DataFrame, metric: str = "accuracy") -> list[str]:
    """For each protocol, each method's paired per-seed difference to random init and autoencoder."""
    frame = label_rows(records)
    frame = frame[frame["metric"] == metric]
    lines = []
    for protocol, rows in frame.groupby("protocol", sort=False):
        by_seed = rows.pivot_table(index="seed", columns="method", values="value")
        ranking = by_seed.mean().sort_values(ascending=False)
        lines.append(f"- **{protocol}**: " + " > ".join(f"{m} ({v * 100:.1f})" for m, v in ranking.items()))
        for base in ("random", "autoencoder"):
            if base not in by_seed:
                continue
            for method in by_seed.columns:
                if method == base or method == "random":
                    continue
                diff = (by_seed[method] - by_seed[base]).dropna() * 100
                if len(diff):
                    lines.append(f"  - {method} − {base}: {diff.mean():+.2f} points (per seed: "
                                 + ", ".join(f"{d:+.2f}" for d in diff) + ")")
    return lines


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
        masks = sample_masks(ckpt["pretext"]["mask"], len(x), x.shape[-1], torch.Generator().manual_seed(seed))
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
