"""Datasets as in-memory tensors, looked up by name.

Every dataset is an `ImageDataset`: uint8 images (N, C, H, W) and labels, held in memory (or
memory-mapped from a file: STL-10's binaries, decoded VOC / image folders) so the training loop
indexes tensors instead of calling per-sample Python. One size per dataset: images of variable
size are brought to a square `load_size` when read. Readers: fashion_mnist, cifar, stl10, voc,
imagefolder; geometry and augmentation: transforms.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ctxenc.errors import UserError

DEBIAN_ROOT = Path("/usr/share/datasets")


TASKS = ("single_label", "multi_label", "segmentation", "unlabeled")


@dataclass(frozen=True)
class ImageDataset:
    """images: uint8 (N, C, H, W); labels by task:

    - single_label: int64 (N,) class indices
    - multi_label: float32 (N, K): 1 present, 0 absent, -1 ignore (VOC: only "difficult" objects)
    - segmentation: int64 (N, H, W) class map (an ignore value allowed)
    - unlabeled: None
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int
    task: str = "single_label"

    def __len__(self) -> int:
        return self.images.shape[0]


def resolve_root(data_root: str | os.PathLike | None) -> Path | None:
    """The data root the user named: `--data-root`, else `$CTXENC_DATA`, else None."""
    root = data_root or os.environ.get("CTXENC_DATA")
    return Path(root) if root else None


DATASETS = ("fashion_mnist", "cifar10", "cifar100", "stl10", "voc2007", "voc2012_seg", "imagefolder")
# The (train, test) splits evaluation uses; pretraining uses the first unless told otherwise.
EVAL_SPLITS = {"voc2007": ("trainval", "test"), "voc2012_seg": ("train", "val")}
# The task of the evaluation splits; imagefolder's depends on the folder's layout.
TASK_OF = {"fashion_mnist": "single_label", "cifar10": "single_label", "cifar100": "single_label",
           "stl10": "single_label", "voc2007": "multi_label", "voc2012_seg": "segmentation"}


def _family(name: str) -> tuple[str, str]:
    """'imagefolder:paris' -> ('imagefolder', 'paris'); other names have no sub-folder."""
    family, _, sub = name.partition(":")
    if family not in DATASETS or (sub and family != "imagefolder"):
        raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}, imagefolder:SUBFOLDER.")
    return family, sub


def eval_splits(name: str) -> tuple[str, str]:
    """The (train, test) split names of dataset `name`, e.g. ('trainval', 'test') for voc2007."""
    return EVAL_SPLITS.get(_family(name)[0], ("train", "test"))


def _folder(name: str, data_root) -> Path:
    sub = _family(name)[1]
    root = resolve_root(data_root)
    if root is None:
        raise UserError(f"dataset {name} needs --data-root DIR (or CTXENC_DATA) naming its folder.")
    return root / sub if sub else root


def dataset_task(name: str, data_root=None) -> str:
    """What the labels of the evaluation splits are: single_label, multi_label, segmentation, unlabeled."""
    family, _ = _family(name)
    if family == "imagefolder":
        from ctxenc.data.imagefolder import task_of

        return task_of(_folder(name, data_root))
    return TASK_OF[family]


def load_dataset(name: str, split: str, data_root=None, download: bool = False, limit: int | None = None,
                 load_size: int = 256) -> ImageDataset:
    """Load split `split` of dataset `name` (uint8 images, in memory or memory-mapped).

    limit: only the first `limit` images (image folders: evenly spaced). load_size: the square
    size that datasets of variable image size (VOC, image folders) are stored at; see
    `ctxenc.data.transforms.load_size_for`.
    """
    family, _ = _family(name)
    root = resolve_root(data_root)
    if family == "fashion_mnist":
        from ctxenc.data.fashion_mnist import load_fashion_mnist

        data = load_fashion_mnist(split, root, download)
        if limit:
            data = dataclasses.replace(data, images=data.images[:limit], labels=data.labels[:limit])
        return data
    if family in ("cifar10", "cifar100"):
        from ctxenc.data.cifar import load

        data = load(family, split, root, download)
        if limit:
            data = dataclasses.replace(data, images=data.images[:limit], labels=data.labels[:limit])
        return data
    if family == "stl10":
        from ctxenc.data.stl10 import load

        return load(split, root, download, limit)
    if family == "voc2007":
        from ctxenc.data.voc import load_classification

        return load_classification(split, root, download, limit, load_size)
    if family == "voc2012_seg":
        from ctxenc.data.voc import load_segmentation

        return load_segmentation(split, root, download, limit, load_size)
    from ctxenc.data.imagefolder import load

    folder = _folder(name, data_root)
    if download and not folder.is_dir():
        raise UserError(f"an image folder cannot be downloaded; {folder} does not exist.")
    return load(name, split, folder, limit, load_size)


from ctxenc.data.transforms import to_model_input  # noqa: E402  (re-exported: the foundation's entry point)

__all__ = ["DATASETS", "TASKS", "ImageDataset", "dataset_task", "eval_splits", "load_dataset", "resolve_root", "to_model_input"]
