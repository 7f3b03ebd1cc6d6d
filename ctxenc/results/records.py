"""Long-format result rows, one per (cell, metric), in `records.csv`.

Columns: suite, dataset, pretext, encoder, mask, loss, seed, protocol, metric, value,
pretrain_seconds, eval_seconds, checkpoint, pretrain_dataset (where the encoder was pretrained;
`dataset` is where it was evaluated). The file is rewritten atomically on every append,
so it is never left partial.

`protocol` is the protocol's label in the suite (default its name, e.g. segmentation_frozen).
`metric` is the evaluator's key; a variant of a metric is named `<metric>@<qualifier>`, the
qualifier a label fraction (`map@10%`, fine-tuning on 10% of the labels) or an encoder stage
(`map@conv2`, the layer-wise probe); per-class IoUs are `iou/<class index>`; `val_*`, `lr*`,
`epochs*` and `weight_decay*` rows record what was chosen on the validation split.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ctxenc.io import atomic_write

COLUMNS = ["suite", "dataset", "pretext", "method", "encoder", "mask", "loss", "seed", "protocol", "metric", "value",
           "pretrain_seconds", "pretrain_steps", "eval_seconds", "checkpoint", "pretrain_dataset",
           "commit", "torch", "threads", "cpu", "wall_seconds"]


def read_records(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    # Records written before a column existed read it as empty, so old results still report.
    return frame.reindex(columns=[*COLUMNS, *[c for c in frame.columns if c not in COLUMNS]])


def append_records(path: str | Path, rows: list[dict]) -> pd.DataFrame:
    """Append `rows` to the CSV at `path` (created if missing), atomically."""
    frame = pd.concat([read_records(path), pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)
    atomic_write(path, lambda f: frame.to_csv(f, index=False), binary=False)
    return frame
