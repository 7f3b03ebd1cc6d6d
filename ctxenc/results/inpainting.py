"""Table 1 in miniature, from `inpainting` records: the table beside the paper's, the comparisons
the paper makes, and a grid with one row per method on the same test images.

The inpainting evaluator writes metrics named "<method>/<metric>" (ctxenc.evaluators.inpainting).
The classical baselines (mean fill, biharmonic, HOG nearest neighbour) do not depend on the
checkpoint: every cell measures the same numbers, and the table shows them once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from ctxenc.evaluators.inpainting import METHODS
from ctxenc.results.figures import figure_link, highlight, image_rows
from ctxenc.results.provenance import commit_warning, limit_warning, provenance_lines, run_limit
from ctxenc.results.samples import classical_completions
from ctxenc.results.tables import mean_cell, write_tables

CLASSICAL = {"mean_fill": "Mean fill", "biharmonic": "Biharmonic inpainting", "nn_hog": "NN inpainting, HOG features"}

# Pathak et al. 2016, Table 1: Paris StreetView, 128 px images, central 64 px hole.
PAPER_TABLE1 = pd.DataFrame(
    [("NN inpainting, HOG features", 19.92, 6.92, 12.79),
     ("NN inpainting, context-encoder features", 15.10, 4.30, 14.70),
     ("Context encoder, L2 + adversarial", 9.37, 1.96, 18.58)],
    columns=["method", "mean L1 (%)", "mean L2 (%)", "PSNR (dB)"],
).set_index("method")

COLUMNS = {"l1": ("mean L1 (%)", 100, 2), "l2": ("mean L2 (%)", 100, 2), "psnr": ("PSNR (dB)", 1, 2),
           "ssim": ("SSIM", 1, 3), "sharpness": ("sharpness", 1, 2)}


def method_label(method: str, mask: str, loss: str) -> str:
    if method in CLASSICAL:
        return CLASSICAL[method]
    trained = f"CE {loss}" if mask == "center" else f"CE {mask} {loss}"
    return f"NN inpainting, {trained} features" if method == "nn_features" else f"Context encoder, {loss}" + ("" if mask == "center" else f" ({mask} masks)")


def inpainting_rows(records: pd.DataFrame) -> pd.DataFrame:
    """Records of the inpainting protocol with `method` (a table label), `method_key` and `measure`."""
    frame = records[records["protocol"] == "inpainting"].copy()
    split = frame["metric"].str.split("/", n=1, expand=True)
    frame["method_key"], frame["measure"] = split[0], split[1]
    frame["method"] = [method_label(m, mask, loss) for m, mask, loss in zip(frame["method_key"], frame["mask"], frame["loss"])]
    return frame


def order(frame: pd.DataFrame) -> list[str]:
    keys = frame.drop_duplicates("method").set_index("method")
    return sorted(keys.index, key=lambda m: (METHODS.index(keys.loc[m, "method_key"]), keys.loc[m, "loss"], m))


def table1(records: pd.DataFrame) -> pd.DataFrame:
    """Rows = methods in Table 1's order; "mean ± std" over seeds for the learned ones (the
    classical ones are deterministic: one number; one seed: "n = 1", no ±); the paper's columns beside ours."""
    frame = inpainting_rows(records)
    learned = ~frame["method_key"].isin(CLASSICAL)
    stats = frame.groupby(["method", "measure"])["value"].agg(["mean", "std"])
    seeds = frame[learned].groupby("method")["seed"].nunique()
    rows = []
    for method in order(frame):
        row = {"method": method, "seeds": int(seeds[method]) if method in seeds else "deterministic"}
        for measure, (name, scale, digits) in COLUMNS.items():
            if (method, measure) not in stats.index:
                continue
            mean, std = stats.loc[(method, measure)] * scale
            row[name] = f"{mean:.{digits}f}" if row["seeds"] == "deterministic" else mean_cell(mean, std, row["seeds"], digits)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    paper = PAPER_TABLE1.rename(columns=lambda c: f"paper {c}")
    paper.index = paper.index.map(paper_row_for)
    table = table.join(paper[~paper.index.duplicated()], how="left").astype(object).fillna("")
    table.index.name = None
    return table


def paper_row_for(paper_method: str) -> str:
    """Which of our rows each of the paper's rows sits beside."""
    return {"NN inpainting, HOG features": CLASSICAL["nn_hog"],
            "NN inpainting, context-encoder features": "NN inpainting, CE l2+adv features",
            "Context encoder, L2 + adversarial": "Context encoder, l2+adv"}[paper_method]


def comparison_lines(records: pd.DataFrame) -> list[str]:
    """The paper's claims, checked on our numbers: CE L2 against the baselines, L2+adv against L2."""
    frame = inpainting_rows(records)
    means = frame.groupby(["method", "measure"])["value"].mean()
    lines = []
    ce_l2 = "Context encoder, l2"
    for base in (*CLASSICAL.values(), "NN inpainting, CE l2 features"):
        if (ce_l2, "psnr") not in means or (base, "psnr") not in means:
            continue
        d_psnr = means[(ce_l2, "psnr")] - means[(base, "psnr")]
        d_l2 = (means[(ce_l2, "l2")] - means[(base, "l2")]) * 100
        verdict = "better" if d_psnr > 0 and d_l2 < 0 else "worse" if d_psnr < 0 and d_l2 > 0 else "mixed"
        lines.append(f"- {ce_l2} vs {base}: PSNR {d_psnr:+.2f} dB, mean L2 {d_l2:+.2f} points ({verdict}).")
    ce = frame[frame["method_key"] == "context_encoder"]
    by_seed = ce.pivot_table(index="seed", columns=["loss", "measure"], values="value")
    if {"l2", "l2+adv"} <= set(by_seed.columns.get_level_values(0)):
        for measure, what in (("psnr", "PSNR (dB)"), ("l2", "mean L2 (points)"), ("sharpness", "sharpness"), ("ssim", "SSIM")):
            scale = 100 if measure == "l2" else 1
            diff = ((by_seed[("l2+adv", measure)] - by_seed[("l2", measure)]) * scale).dropna()
            lines.append(f"- l2+adv − l2, paired by seed, {what}: {diff.mean():+.3f} (per seed: "
                         + ", ".join(f"{d:+.3f}" for d in diff) + ")")
    return lines


def inpainting_grid_figure(records: pd.DataFrame, out: str | Path, data_root=None, n: int = 8,
                           limit: int | None = None) -> Path | None:
    """One row per method (plus the input with its hole and the original) on the same n test
    images, from the first seed's checkpoints; the columns are spread over the scored images."""
    frame = inpainting_rows(records)
    cells = frame[frame["seed"] == frame["seed"].min()].drop_duplicates("checkpoint").sort_values("loss")
    loaded = classical_completions(Path(out).parent, list(cells["checkpoint"].dropna().astype(str)), data_root, limit, n)
    if loaded is None:
        return None
    x, hole, completions = loaded
    meta = cells.set_index(cells["checkpoint"].astype(str))
    found: dict[tuple, torch.Tensor] = {}  # (METHODS index, loss, label) -> completed images
    for checkpoint, method, completed in completions:
        mask, loss = meta.loc[checkpoint, "mask"], meta.loc[checkpoint, "loss"]
        found.setdefault((METHODS.index(method), "" if method in CLASSICAL else loss, method_label(method, mask, loss)), completed)
    rows = {"input": highlight(x, hole.expand(len(x), -1, -1, -1))}
    rows.update({key[2]: completed for key, completed in sorted(found.items(), key=lambda kv: kv[0])})
    rows["original"] = x
    return image_rows(rows, out)


def write_inpainting_report(out_dir: Path, records: pd.DataFrame, data_root=None) -> Path:
    """table.md (Table 1 layout with the paper's beside it), inpainting_grid.png and report.md."""
    table = table1(records)
    frame = inpainting_rows(records)
    write_tables(out_dir, [("Table 1 in miniature beside the paper's (Pathak et al. 2016, Table 1).", table)])
    grid = inpainting_grid_figure(records, out_dir / "inpainting_grid.png", data_root, limit=run_limit(out_dir))
    seconds = frame[frame["method_key"] == "context_encoder"].groupby("loss")["pretrain_seconds"].mean()
    lines = [
        f"# ctxenc results: {', '.join(records['suite'].dropna().astype(str).unique()) or out_dir.name}",
        "",
        *limit_warning(out_dir),
        *commit_warning(records),
        f"Inpainting on `{records['dataset'].iloc[0]}` test images with a central hole, encoder "
        f"`{records['encoder'].iloc[0]}`; metrics over the hole, images in [0, 1] (definitions in "
        "`ctxenc/evaluators/inpainting.py`). Learned rows: mean ± std over seeds "
        f"{sorted(frame['seed'].unique().tolist())} (std with ddof = 1; one seed reads n = 1, no ±: its spread "
        "is unknown); the classical rows are deterministic. Paper columns: Pathak et al. 2016, Table 1 "
        "(Paris StreetView, 128 px, 64 px hole), beside the row that corresponds. Raw rows: [records.csv](records.csv); tables: "
        "[table.md](table.md), [table.tex](table.tex).",
        "",
        "## Table 1",
        "",
        table.to_markdown(),
        "",
        "Pretraining time per seed: " + ", ".join(f"{loss} {s:.0f} s" for loss, s in seconds.items()) + ".",
        "",
        "## The paper's comparisons on our numbers",
        "",
        *comparison_lines(records),
    ]
    if grid:
        lines += ["", "## The same test images, one row per method (first seed)", "", figure_link("inpainting grid", grid)]
    lines += ["", "## Provenance", "", *provenance_lines(records)]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return out_dir / "report.md"
