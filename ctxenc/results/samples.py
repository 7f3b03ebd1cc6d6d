"""The one place results code touches data and checkpoints: it loads test images, rebuilds
encoders from checkpoints, samples masks and completes images, and reads detection predictions,
returning tensors for the renderers in ctxenc/results/figures.py.

Checkpoint paths are relative to the results folder (records store them so; absolute paths
stay absolute); a cell's predictions lie in its run folder. A missing file is skipped: a report draws what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ctxenc.checkpoint import load_checkpoint, rebuild_model
from ctxenc.masks import apply_mask, sample_masks
from ctxenc.results.records import with_methods


@dataclass(frozen=True)
class Scenes:
    """Test scenes with their annotations: images uint8 (N, 3, S, S), class_maps (N, S, S),
    boxes (N, K, 5 or 6) as (class, x0, y0, x1, y1[, difficult]) with class -1 for padding."""

    images: torch.Tensor
    class_maps: torch.Tensor | None
    boxes: torch.Tensor | None
    class_names: list[str]


def scene_samples(dataset, data_root=None, n: int = 10) -> Scenes | None:
    """The first `n` test images of `dataset` (a name or a spec), or None for a dataset without
    class maps or boxes."""
    from ctxenc.data import dataset_info, eval_splits, load_dataset

    if dataset is None:
        return None
    data = load_dataset(dataset, eval_splits(dataset)[1], data_root, limit=n)
    if data.class_maps is None and data.boxes is None:
        return None
    return Scenes(data.images[:n], None if data.class_maps is None else data.class_maps[:n],
                  None if data.boxes is None else data.boxes[:n],
                  list(dataset_info(dataset)[0].class_names or [str(k) for k in range(data.num_classes)]))


def completions(out_dir: Path, records: pd.DataFrame, data_root=None, limit: int | None = None,
                n: int = 8) -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(method, masked (N, C, S, S), masks (N, 1, S, S) bool, completed, original) for each
    context-encoder checkpoint of the first seed, on n held-out images of its pretraining data
    spread over the first `limit` of them (if given); images in [-1, 1]."""
    from ctxenc.data import eval_splits
    from ctxenc.evaluation import prepared_split

    frame = with_methods(records)
    seed = frame["seed"].min()
    ce = frame[(frame["pretext"] == "context_encoder") & (frame["seed"] == seed)].dropna(subset=["checkpoint"])
    rows = []
    for method, cell in ce.groupby("method", sort=True):
        path = Path(out_dir) / str(cell["checkpoint"].iloc[0])
        if not path.is_file():
            continue
        ckpt = load_checkpoint(path)
        model = rebuild_model(ckpt).eval()
        dataset = ckpt["data"]["dataset"]
        images, _ = prepared_split(dataset, eval_splits(dataset)[1], data_root, ckpt["data"]["input_size"], limit)
        x = images[:: max(1, len(images) // n)][:n].to("cpu")  # float (n, C, S, S) in [-1, 1]
        generator = torch.Generator().manual_seed(int(seed))
        masks = sample_masks(model.cfg.mask, len(x), x.shape[-1], generator, **model.cfg.mask_options(x.shape[-1]))
        masked = apply_mask(x, masks, model.fill)
        with torch.no_grad():
            completed = torch.where(masks, model(masked), x)
        rows.append((method, masked, masks, completed, x))
    return rows


def classical_completions(out_dir: Path, checkpoints: list[str], data_root=None, limit: int | None = None,
                          n: int = 8) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str, torch.Tensor]]] | None:
    """Table 1's figure data: the same n scored test images completed by every inpainting method
    (ctxenc.evaluators.inpainting.METHODS) for each checkpoint in `checkpoints`.

    Returns (original (N, C, S, S), hole (1, 1, S, S) bool, [(checkpoint, method key, completed)]),
    or None when no checkpoint file exists.
    """
    from ctxenc.data import eval_splits
    from ctxenc.evaluation import prepared_split
    from ctxenc.evaluators.inpainting import InpaintingConfig, hole_for, inpaint_all

    found = []
    x = hole = None
    for name in checkpoints:
        path = Path(out_dir) / name
        if not path.is_file():
            continue
        ckpt = load_checkpoint(path)
        model = rebuild_model(ckpt).eval()
        size, dataset = ckpt["data"]["input_size"], ckpt["data"]["dataset"]
        train_split, test_split = eval_splits(dataset)
        train, _ = prepared_split(dataset, train_split, data_root, size, limit)
        test, _ = prepared_split(dataset, test_split, data_root, size, limit)
        scored = test[: InpaintingConfig.num_images]
        x = scored[torch.linspace(0, len(scored) - 1, n).long()].to("cpu")
        hole = hole_for(model, size)
        found += [(name, method, completed) for method, completed in inpaint_all(model, train, x, hole).items()]
    return None if x is None else (x, hole, found)


def detections(run_folder: Path, protocol: str) -> dict[str, torch.Tensor] | None:
    """The predictions the detection evaluator saved for its first test images
    (`predictions-<protocol>.pt` in the cell's run folder): {boxes: [(n, 4) xyxy], labels: [(n,)],
    scores: [(n,)]}, one entry per image; None when the cell saved none."""
    path = Path(run_folder) / f"predictions-{protocol}.pt"
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def detection_samples(out_dir: Path, records: pd.DataFrame, protocol: str) -> dict[str, dict]:
    """{method: predictions} for the first seed of each method of `protocol` whose run folder
    (`runs/<method, / as ->/seed<k>`) holds a predictions file."""
    frame = with_methods(records[records["protocol"] == protocol])
    found = {}
    for method, rows in frame.groupby("method", sort=False):
        folder = Path(out_dir) / "runs" / method.replace("/", "-") / f"seed{int(rows['seed'].min())}"
        predictions = detections(folder, protocol)
        if predictions is not None:
            found[method] = predictions
    return found
