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
from typing import Any, Mapping

import torch

from ctxenc.errors import UserError

DEBIAN_ROOT = Path("/usr/share/datasets")


TASKS = ("single_label", "multi_label", "segmentation", "unlabeled")


@dataclass(frozen=True)
class ImageDataset:
    """images: uint8 (N, C, H, W); labels by task:

    - single_label: int64 (N,) class indices
    - multi_label: float32 (N, K): 1 present, 0 absent, -1 ignore (VOC: only "difficult" objects)
    - segmentation: None (VOC12) or image-level labels; the maps are in class_maps
    - unlabeled: None

    class_maps: uint8 (N, H, W), 0 = background, k + 1 = class k, 255 = ignore (segmentation
    datasets, and FashionScenes beside its multi-hot labels); boxes: int16 (N, max_objects, 5)
    rows (class, x0, y0, x1, y1), -1 for unused rows (FashionScenes).
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


DATASETS = ("fashion_mnist", "fashion_scenes", "cifar10", "cifar100", "stl10", "voc2007", "voc2012_seg", "imagefolder")
# The (train, test) splits evaluation uses; pretraining uses the first unless told otherwise.
EVAL_SPLITS = {"voc2007": ("trainval", "test"), "voc2012_seg": ("train", "val")}
# The annotations of the evaluation splits; imagefolder's depend on the folder's layout.
TASKS_OF = {"fashion_mnist": ("single_label",), "fashion_scenes": ("multi_label", "segmentation"),
            "cifar10": ("single_label",), "cifar100": ("single_label",), "stl10": ("single_label",),
            "voc2007": ("multi_label",), "voc2012_seg": ("segmentation",)}


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


def dataset_name(dataset: str | Mapping) -> str:
    """The name records and tables show: 'cifar10', 'imagefolder:paris', 'fashion_scenes'."""
    return dataset_spec(dataset)[0]


def _family(dataset: str | Mapping) -> tuple[str, str]:
    """'imagefolder:paris' -> ('imagefolder', 'paris'); other names have no sub-folder."""
    name, options = dataset_spec(dataset)
    family, _, sub = name.partition(":")
    if family not in DATASETS or (sub and family != "imagefolder"):
        raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}, imagefolder:SUBFOLDER.")
    if options and family != "fashion_scenes":
        raise UserError(f"{name} takes no options, got {dict(options)}; name it by its name alone.")
    return family, sub


def eval_splits(dataset: str | Mapping) -> tuple[str, str]:
    """The (train, test) split names of `dataset`, e.g. ('trainval', 'test') for voc2007."""
    return EVAL_SPLITS.get(_family(dataset)[0], ("train", "test"))


def _folder(dataset: str | Mapping, data_root) -> Path:
    sub = _family(dataset)[1]
    root = resolve_root(data_root)
    if root is None:
        raise UserError(f"dataset {dataset_name(dataset)} needs --data-root DIR (or CTXENC_DATA) naming its folder.")
    return root / sub if sub else root


def dataset_tasks(dataset: str | Mapping, data_root=None) -> tuple[str, ...]:
    """The annotations the evaluation splits carry: single_label, multi_label, segmentation, unlabeled."""
    family, _ = _family(dataset)
    if family == "imagefolder":
        from ctxenc.data.imagefolder import task_of

        return (task_of(_folder(dataset, data_root)),)
    return TASKS_OF[family]


def _first(data: ImageDataset, limit: int | None) -> ImageDataset:
    """The first `limit` examples of every per-example tensor."""
    if not limit:
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
    family, _ = _family(dataset)
    root = resolve_root(data_root)
    if family == "fashion_mnist":
        from ctxenc.data.fashion_mnist import load_fashion_mnist

        return _first(load_fashion_mnist(split, root, download), limit)
    if family == "fashion_scenes":
        from ctxenc.config import from_dict
        from ctxenc.data.fashion_mnist import load_fashion_mnist
        from ctxenc.data.scenes import ScenesConfig, load_fashion_scenes

        cfg = from_dict(ScenesConfig, dict(dataset_spec(dataset)[1]), "dataset fashion_scenes")
        if split not in ("train", "test"):
            raise UserError(f"fashion_scenes has splits 'train' and 'test', not {split!r}.")
        items = load_fashion_mnist(split, root, download)
        return _first(load_fashion_scenes(split, cfg, items), limit)
    if family in ("cifar10", "cifar100"):
        from ctxenc.data.cifar import load

        return _first(load(family, split, root, download), limit)
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

    folder = _folder(dataset, data_root)
    if download and not folder.is_dir():
        raise UserError(f"an image folder cannot be downloaded; {folder} does not exist.")
    return load(dataset_name(dataset), split, folder, limit, load_size)


from ctxenc.data.transforms import to_model_input  # noqa: E402  (re-exported: the foundation's entry point)

__all__ = ["DATASETS", "TASKS", "ImageDataset", "dataset_name", "dataset_spec", "dataset_tasks", "eval_splits", "load_dataset",
           "resolve_root", "to_model_input"]
