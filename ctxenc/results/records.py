"""Long-format result rows, one per (cell, metric), in `records.csv`.

Columns:
- what was measured: suite, dataset, method, pretext, encoder, mask, loss, seed, protocol, metric, value;
- how long: pretrain_steps, pretrain_seconds, eval_seconds, wall_seconds (the cell's wall time,
  repeated on each of its rows);
- where from: checkpoint (relative to the results folder), pretrain_dataset (where the encoder
  was pretrained; `dataset` is where it was evaluated);
- how much data: limit (the `--limit N` images per split a plumbing check used; empty for a full run);
- provenance: commit (git sha, `+dirty` when the tree had uncommitted changes), torch, threads, cpu;
  device (cpu or cuda), gpu (the GPU's name, empty on the CPU) and amp (True: mixed precision).

`method` is the full label the pretext gives its rows (`random/init=pytorch`,
`context_encoder/random_region/l2/loss_region=image`); records written before it existed derive
it from pretext, mask and loss (`with_methods`). Older files read every missing column as empty.

`protocol` is the protocol's label in the suite (default its name, e.g. segmentation_frozen).
`metric` is the evaluator's key; a variant of a metric is named `<metric>@<qualifier>`, the
qualifier a label fraction (`map@10%`, fine-tuning on 10% of the labels) or an encoder stage
(`map@conv2`, the layer-wise probe); per-class IoUs are `iou/<class index>`; `val_*`, `lr*`,
`epochs*`, `max_epochs*`, `lr_min*`, `lr_max*` and `weight_decay*` rows record what was chosen on
the validation split and the grid it was chosen from (`lr_margin*`: how far the chosen rate's
validation score was above the best other rate's); `*_all_background`, `*_class_prior` and
`*_majority` rows are trivial references (see ctxenc/results/references.py).

A measurement is identified by KEY (suite, dataset, method, seed, protocol, pretrain_steps, limit):
`replace_records` drops the rows of the same key before adding the new ones, so running an
evaluation again replaces its rows instead of adding copies that a report would average as seeds.
The file is rewritten atomically on every write, under an exclusive lock on `records.csv.lock`,
so several processes may write to one file and it is never left partial.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ctxenc.errors import UserError
from ctxenc.io import atomic_write, locked

COLUMNS = ["suite", "dataset", "method", "pretext", "encoder", "mask", "loss", "seed", "protocol", "metric", "value",
           "pretrain_steps", "pretrain_seconds", "eval_seconds", "wall_seconds", "checkpoint", "pretrain_dataset",
           "limit", "commit", "torch", "threads", "cpu", "device", "gpu", "amp"]
# What names one measurement: rows agreeing on all of these come from one evaluation.
KEY = ["suite", "dataset", "method", "seed", "protocol", "pretrain_steps", "limit"]


def read_records(path: str | Path) -> pd.DataFrame:
    """The records at `path` with every column of COLUMNS (missing ones empty), then any others."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not a readable records CSV ({type(err).__name__}); restore it from its run or remove it.") from None
    # Records written before a column existed read it as empty, so old results still report.
    return frame.reindex(columns=[*COLUMNS, *[c for c in frame.columns if c not in COLUMNS]])


def replace_records(path: str | Path, rows: list[dict], key: list[str] = KEY) -> tuple[pd.DataFrame, int]:
    """Write `rows` into the CSV at `path` (created if missing), first dropping the old rows that
    share `key` with one of them; returns (the whole file's records, how many old rows were dropped).

    The read-modify-write holds an exclusive flock on `<path>.lock`, so writes from several
    processes (suite cells spread over a cluster) serialise instead of losing each other's rows;
    the write itself is atomic, so a reader never sees a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = pd.DataFrame(rows, columns=COLUMNS)
    with locked(path):
        old = read_records(path)
        stale = pd.Series(False, index=old.index)
        if not old.empty:
            keys = set(_key_values(with_methods(new), key))
            stale = pd.Series([k in keys for k in _key_values(with_methods(old), key)], index=old.index, dtype=bool)
        frame = pd.concat([old[~stale], new], ignore_index=True) if not old.empty else new
        frame["limit"] = pd.to_numeric(frame["limit"], errors="coerce").astype("Int64")  # 50, not 50.0 beside empty cells
        atomic_write(path, lambda f: frame.to_csv(f, index=False), binary=False)
    return frame, int(stale.sum())


def _key_values(frame: pd.DataFrame, key: list[str]) -> list[tuple[str, ...]]:
    """Each row's `key` as text ('' where empty; 50 and 50.0 alike), so rows read back from the
    CSV compare equal to the rows that wrote them."""
    def text(value) -> str:
        if value is None or value == "" or (isinstance(value, float) and value != value):
            return ""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)

    return [tuple(text(v) for v in row) for row in frame[key].itertuples(index=False, name=None)]


def with_methods(records: pd.DataFrame) -> pd.DataFrame:
    """A copy of `records` whose `method` is filled everywhere: where a row has none (records
    older than the column, or hand-made frames), random / autoencoder / context_encoder/<mask>/<loss>."""
    frame = records.copy()
    derived = frame["pretext"].astype(str)
    if {"mask", "loss"} <= set(frame.columns):
        ce = frame["pretext"] == "context_encoder"
        derived = derived.where(~ce, derived + "/" + frame["mask"].astype(str) + "/" + frame["loss"].astype(str))
    if "method" not in frame:
        frame["method"] = derived
    else:
        given = frame["method"].astype(object)
        frame["method"] = given.where(given.notna() & (given.astype(str) != ""), derived)
    return frame


def split_metric(metric: str) -> tuple[str, str | None]:
    """'map@10%' -> ('map', '10%'), 'miou' -> ('miou', None): a metric and its qualifier (label
    fraction or encoder stage), as records name them."""
    base, _, qualifier = metric.partition("@")
    return base, qualifier or None
