"""Datasets as in-memory tensors, looked up by name.

Every dataset is an `ImageDataset`: uint8 images (N, C, H, W) and labels, held in memory so the
training loop indexes tensors instead of calling per-sample Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ctxenc.errors import UserError

DEBIAN_ROOT = Path("/usr/share/datasets")


TASKS = ("single_label", "multi_label", "segmentation", "unlabeled")


@dataclass(frozen=True)
class ImageDataset:
    """images: uint8 (N, C, H, W); labels by task:

    - single_label: int64 (N,) class indices
    - multi_label: float32 (N, K) multi-hot
    - segmentation: int64 (N, H, W) class map (an ignore value allowed)
    - unlabeled: None

    A dataset with more than one kind of annotation (FashionScenes) also carries
    class_maps: uint8 (N, H, W), 0 = background, k + 1 = class k, 255 = ignore; and
    boxes: int16 (N, max_objects, 5) rows (class, x0, y0, x1, y1), -1 for unused rows.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    task: str = "single_label"
    class_maps: torch.Tensor | None = None
    boxes: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


def resolve_root(data_root: str | os.PathLike | None) -> Path | None:
    """The data root the user named: `--data-root`, else `$CTXENC_DATA`, else None."""
    root = data_root or os.environ.get("CTXENC_DATA")
    return Path(root) if root else None


DATASETS = ("fashion_mnist", "fashion_scenes")


def dataset_spec(dataset: str | Mapping) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """A dataset as configs name it -> (name, sorted options), hashable.

    `dataset` is a name ("fashion_mnist") or a mapping {name: ..., **options}, e.g.
    {name: fashion_scenes, size: 32, train_scenes: 4000} (options of `ScenesConfig`).
    """
    if isinstance(dataset, str):
        return dataset, ()
    if isinstance(dataset, tuple):  # already a spec
        return dataset
    options = dict(dataset)
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"a dataset mapping needs a 'name' (one of {', '.join(DATASETS)}), got {dict(dataset)}.")
    return name, tuple(sorted(options.items()))


def load_dataset(dataset: str | Mapping, split: str, data_root=None, download: bool = False) -> ImageDataset:
    """Load split `train` or `test` of `dataset` (a name or {name, **options}) into memory."""
    name, options = dataset_spec(dataset)
    if name == "fashion_mnist":
        from ctxenc.data.fashion_mnist import load_fashion_mnist

        if options:
            raise UserError(f"fashion_mnist takes no options, got {dict(options)}; name it by its name alone.")
        return load_fashion_mnist(split, resolve_root(data_root), download)
    if name == "fashion_scenes":
        from ctxenc.config import from_dict
        from ctxenc.data.fashion_mnist import load_fashion_mnist
        from ctxenc.data.scenes import ScenesConfig, load_fashion_scenes

        cfg = from_dict(ScenesConfig, dict(options), "dataset fashion_scenes")
        if split not in ("train", "test"):
            raise UserError(f"fashion_scenes has splits 'train' and 'test', not {split!r}.")
        items = load_fashion_mnist(split, resolve_root(data_root), download)
        return load_fashion_scenes(split, cfg, items)
    raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}.")


def to_model_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, h, w) -> float32 (N, C, size, size) in [-1, 1].

    Smaller images are zero-padded (black, Fashion-MNIST's background) around the centre,
    larger ones centre-cropped, so no pixel is resampled.
    """
    x = images.float().div_(127.5).sub_(1.0)
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if h > size or w > size:
        top, left = (h - size) // 2, (w - size) // 2
        return x[..., top : top + size, left : left + size].contiguous()
    pt, pl = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(x, (pl, size - w - pl, pt, size - h - pt), value=-1.0)
