"""Datasets as in-memory tensors, looked up by name.

Every dataset is an `ImageDataset`: uint8 images (N, C, H, W) and labels, held in memory (or
memory-mapped from a file: STL-10's binaries, decoded VOC / image folders) so the training loop
indexes tensors instead of calling per-sample Python. One size per dataset: images of variable
size are brought to a square `load_size` when read. Readers (each registers its datasets with
`@register_dataset`): fashion_mnist, scenes, cifar, stl10, voc, imagefolder; geometry and
augmentation: transforms. To add a dataset: write its reader module with a registered
`load(request)`, and add the module to the import line at the bottom.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ctxenc.errors import UserError

TASKS = ("single_label", "multi_label", "segmentation", "boxes", "unlabeled")


@dataclass(frozen=True)
class ImageDataset:
    """images: uint8 (N, C, H, W): a tensor, or `ctxenc.data.streaming.StreamedImages` (an image
    folder decoded per batch; indexing it gives tensors); labels by task:

    - single_label: int64 (N,) class indices
    - multi_label: float32 (N, K): 1 present, 0 absent, -1 ignore (VOC: only "difficult" objects)
    - segmentation: None (VOC12) or image-level labels; the maps are in class_maps
    - unlabeled: None

    class_maps: uint8 (N, H, W), 0 = background, k + 1 = class k, 255 = ignore (segmentation
    datasets, and FashionScenes beside its multi-hot labels); boxes: int16 (N, max_objects, 5 or 6)
    rows (class, x0, y0, x1, y1[, difficult]), inclusive, -1 for unused rows (FashionScenes;
    VOC2007 with the difficult flag).
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


@dataclass(frozen=True)
class LoadRequest:
    """What a dataset's loader gets: the split, the data root (None: not given), and how much."""

    name: str
    split: str
    root: Path | None
    download: bool
    limit: int | None
    load_size: int
    options: Any = None  # the dataset's options object (its `options` dataclass), if it has one
    folder: Path | None = None  # imagefolder: the folder named by --data-root and the :SUB part


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the registry knows it.

    splits: every split it has; eval_splits: the (train, test) pair evaluation uses;
    pretrain_split: what pretraining reads unless told; tasks: the annotations of the evaluation
    splits (single_label, multi_label, segmentation, boxes, unlabeled), or a function of the
    folder (image folders); load(request) -> ImageDataset; options: the dataclass of its
    mapping options (None: it takes none); class_names: what figures call the classes;
    help: one line for `--help`.
    """

    name: str
    splits: tuple[str, ...]
    eval_splits: tuple[str, str]
    load: Callable[[LoadRequest], ImageDataset]
    tasks: tuple[str, ...] | Callable[[Path], tuple[str, ...]]
    pretrain_split: str | None = None
    options: type | None = None
    class_names: tuple[str, ...] | None = None  # None: numbered (or from the folder)
    help: str = ""


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(name: str, splits: tuple[str, ...], eval_splits: tuple[str, str],
                     tasks: tuple[str, ...] | Callable[[Path], tuple[str, ...]], **meta) -> Callable:
    """Decorator: register `load(request) -> ImageDataset` as dataset `name` (see `DatasetInfo` for `meta`).

    Each reader module registers its datasets beside its code, e.g.
    `@register_dataset("cifar10", ("train", "test"), ("train", "test"), ("single_label",))`.
    """

    def add(load: Callable[[LoadRequest], ImageDataset]) -> Callable[[LoadRequest], ImageDataset]:
        DATASETS[name] = DatasetInfo(name, splits, eval_splits, load, tasks, **meta)
        return load

    return add


def dataset_spec(dataset: str | Mapping) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """A dataset as configs name it -> (name, sorted options), hashable.

    `dataset` is a name ("fashion_mnist") or a mapping {name: ..., **options}, e.g.
    {name: fashion_scenes, size: 32, train_scenes: 2000} (options of `ScenesConfig`).
    """
    if isinstance(dataset, str):
        return dataset, ()
    if isinstance(dataset, tuple):  # already a spec
        return dataset
    if not isinstance(dataset, Mapping):
        raise UserError(f"a dataset is a name or a mapping {{name: ..., options}}, got {dataset!r}.")
    options = dict(dataset)
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise UserError(f"a dataset mapping needs a 'name' (one of {', '.join(DATASETS)}), got {dict(dataset)}.")
    return name, tuple(sorted(options.items()))


def dataset_name(dataset: str | Mapping) -> str:
    """The name records and tables show: 'cifar10', 'imagefolder:paris', 'fashion_scenes'."""
    return dataset_spec(dataset)[0]


def dataset_info(dataset: str | Mapping) -> tuple[DatasetInfo, str, Any]:
    """-> (registry entry, sub-folder ('' unless imagefolder:SUB), validated options or None)."""
    name, options = dataset_spec(dataset)
    family, _, sub = name.partition(":")
    info = DATASETS.get(family)
    if info is None or (sub and family != "imagefolder"):
        raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}, imagefolder:SUBFOLDER.")
    if info.options is None:
        if options:
            raise UserError(f"{name} takes no options, got {dict(options)}; name it by its name alone.")
        return info, sub, None
    from ctxenc.config import from_dict

    return info, sub, from_dict(info.options, dict(options), f"dataset {name}")


def eval_splits(dataset: str | Mapping) -> tuple[str, str]:
    """The (train, test) split names evaluation uses, e.g. ('trainval', 'test') for voc2007."""
    return dataset_info(dataset)[0].eval_splits


def pretrain_split(dataset: str | Mapping) -> str:
    """The split pretraining reads by default: the unlabelled pool where there is one, else train."""
    info = dataset_info(dataset)[0]
    return info.pretrain_split or info.eval_splits[0]


def _folder(dataset: str | Mapping, data_root) -> Path:
    sub = dataset_info(dataset)[1]
    root = resolve_root(data_root)
    if root is None:
        raise UserError(f"dataset {dataset_name(dataset)} needs --data-root DIR (or CTXENC_DATA) naming its folder.")
    return root / sub if sub else root


def dataset_tasks(dataset: str | Mapping, data_root=None) -> tuple[str, ...]:
    """The annotations the evaluation splits carry: single_label, multi_label, segmentation, boxes, unlabeled."""
    info = dataset_info(dataset)[0]
    return info.tasks(_folder(dataset, data_root)) if callable(info.tasks) else info.tasks


def _first(data: ImageDataset, limit: int | None) -> ImageDataset:
    """The first `limit` examples of every per-example tensor."""
    if not limit or len(data) <= limit:  # nothing to cut (streamed images would be decoded by a slice)
        return data
    cut = {f: getattr(data, f)[:limit] for f in ("images", "labels", "class_maps", "boxes") if getattr(data, f) is not None}
    return dataclasses.replace(data, **cut)


def load_dataset(dataset: str | Mapping, split: str, data_root=None, download: bool = False, limit: int | None = None,
                 load_size: int = 256) -> ImageDataset:
    """Load split `split` of `dataset` (a name or {name, **options}; uint8 images, in memory or memory-mapped).

    limit: only the first `limit` images (image folders: evenly spaced). load_size: the square
    size that datasets of variable image size (VOC, image folders) are stored at; see
    `ctxenc.data.transforms.load_size_for`.
    """
    info, sub, options = dataset_info(dataset)
    if split not in info.splits and not callable(info.tasks):
        raise UserError(f"{info.name} has splits {', '.join(repr(s) for s in info.splits)}, not {split!r}.")
    folder = _folder(dataset, data_root) if callable(info.tasks) else None
    request = LoadRequest(dataset_name(dataset), split, resolve_root(data_root), download, limit, load_size, options, folder)
    return _first(info.load(request), limit)


def describe_datasets() -> str:
    """One line per registered dataset, for `--help`."""
    return "; ".join(f"{info.name} ({info.help})" if info.help else info.name for info in DATASETS.values())


# Registration happens on import: each reader module registers its datasets beside its code
# (the order here is the order `--help` and "valid names" list them).
from ctxenc.data import fashion_mnist, scenes, cifar, stl10, voc, imagefolder  # noqa: E402,F401  (they need ImageDataset above)

from ctxenc.data.transforms import to_model_input  # noqa: E402  (re-exported: the foundation's entry point)

__all__ = ["DATASETS", "TASKS", "DatasetInfo", "ImageDataset", "LoadRequest", "dataset_info", "dataset_name", "dataset_spec",
           "dataset_tasks", "describe_datasets", "eval_splits", "load_dataset", "pretrain_split", "register_dataset",
           "resolve_root", "to_model_input"]
