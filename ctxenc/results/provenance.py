"""Where the numbers came from and how they were run: the --limit marker bench leaves in the
folder, and the code commit, torch version, threads, CPU, device, GPU, precision and wall time
the records carry."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ctxenc.results.records import with_methods

PROVENANCE = {"commit": "code commit", "torch": "torch", "threads": "threads", "cpu": "CPU", "device": "device",
              "gpu": "GPU", "amp": "mixed precision (AMP)"}


def run_limit(out_dir: Path) -> int | None:
    """The --limit a suite ran with (bench writes run.json), None for a full run."""
    marker = Path(out_dir) / "run.json"
    return json.loads(marker.read_text()).get("limit") if marker.is_file() else None


def limit_warning(out_dir: Path) -> list[str]:
    """A run made with --limit checks the plumbing: say so before any number."""
    limit = run_limit(out_dir)
    if not limit:
        return []
    return [f"**This run used `--limit {limit}`: {limit} images per split, the first seed and a few training steps per cell. "
            "Its numbers check that the suite runs end to end; they say nothing about the methods.**", ""]


def _values(records: pd.DataFrame, column: str) -> list[str]:
    if column not in records:
        return []
    return [str(v) for v in records[column].dropna().unique() if str(v) != ""]


def commit_warning(records: pd.DataFrame) -> list[str]:
    """A bold line when the records come from more than one commit or from a dirty tree: their
    rows may not be comparable."""
    commits = _values(records, "commit")
    lines = []
    if len(commits) > 1:
        lines.append(f"**These records come from {len(commits)} different code commits ({', '.join(commits)}): rows "
                     "measured by different code may not be comparable; re-run the suite from one commit.**")
    if any(c.endswith("+dirty") for c in commits):
        lines.append("**Some rows were run from a working tree with uncommitted changes (`+dirty`): the commit "
                     "alone does not reproduce them.**")
    return [*lines, ""] if lines else []


def wall_time_table(records: pd.DataFrame) -> pd.DataFrame:
    """Rows = protocol (and a total): cells, wall time summed over cells (each cell's
    `wall_seconds` counted once), in minutes."""
    frame = with_methods(records)
    walls = pd.to_numeric(frame["wall_seconds"], errors="coerce") if "wall_seconds" in frame else None
    if walls is None or walls.isna().all():
        return pd.DataFrame()
    # a sweep's pretraining lengths are cells of their own
    cell = [c for c in ("method", "seed", "protocol", "dataset", "pretrain_steps") if c in frame]
    cells = frame.assign(wall=walls).dropna(subset=["wall"]).drop_duplicates(cell)
    by_protocol = cells.groupby("protocol", sort=False)["wall"].agg(["count", "sum"])
    by_protocol.loc["total"] = [by_protocol["count"].sum(), by_protocol["sum"].sum()]
    table = pd.DataFrame({"cells": by_protocol["count"].astype(int).astype(str),
                          "wall time (min)": [f"{s / 60:.1f}" for s in by_protocol["sum"]]})
    table.index.name = None
    return table


def provenance_lines(records: pd.DataFrame) -> list[str]:
    """The report's provenance section: commits, torch, threads, CPU, device, GPU, AMP, wall time per protocol."""
    facts = [f"- {label}: {', '.join(f'`{v}`' for v in values)}" for column, label in PROVENANCE.items()
             if (values := _values(records, column))]
    walls = wall_time_table(records)
    if not facts and walls.empty:
        return ["These records predate provenance columns (commit, torch, threads, CPU, wall time)."]
    lines = [*facts]
    if not walls.empty:
        lines += ["", "Wall time of the cells (pretraining, when the cell ran it, plus evaluation):", "", walls.to_markdown()]
    return lines
