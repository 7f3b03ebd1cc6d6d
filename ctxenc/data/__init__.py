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
from typing import Any, Callable, Mapping

import torch

from ctxenc.errors import UserError

DEBIAN_ROOT = Path("/usr/share/datasets")


TASKS = ("single_label", "multi_label", "segmentation", "boxes", "unlabeled")


@dataclass(frozen=True)
class ImageDataset:
    """images: uint8 (N, C, H, W); labels by task:

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


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    DATASETS[info.name] = info
    return info


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
    info, sub, options = dataset_info(dataset)
    if split not in info.splits and not callable(info.tasks):
        raise UserError(f"{info.name} has splits {', '.join(repr(s) for s in info.splits)}, not {split!r}.")
    folder = _folder(dataset, data_root) if callable(info.tasks) else None
    request = LoadRequest(dataset_name(dataset), split, resolve_root(data_root), download, limit, load_size, options, folder)
    return _first(info.load(request), limit)


def describe_datasets() -> str:
    """One line per registered dataset, for `--help`."""
    return "; ".join(f"{info.name} ({info.help})" if info.help else info.name for info in DATASETS.values())


# Registration: one entry per dataset; readers are imported when a split is loaded.
def _fashion_mnist(r: LoadRequest) -> ImageDataset:
    from ctxenc.data.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist(r.split, r.root, r.download)


def _fashion_scenes(r: LoadRequest) -> ImageDataset:
    from ctxenc.data.fashion_mnist import load_fashion_mnist
    from ctxenc.data.scenes import load_fashion_scenes

    # Pool and train scenes are built from Fashion-MNIST's train items, test scenes from its test items.
    items = load_fashion_mnist("test" if r.split == "test" else "train", r.root, r.download)
    return load_fashion_scenes(r.split, r.options, items)


def _cifar(variant: str) -> Callable[[LoadRequest], ImageDataset]:
    def load(r: LoadRequest) -> ImageDataset:
        from ctxenc.data.cifar import load

        return load(variant, r.split, r.root, r.download)

    return load


def _stl10(r: LoadRequest) -> ImageDataset:
    from ctxenc.data.stl10 import load

    return load(r.split, r.root, r.download, r.limit)


def _voc2007(r: LoadRequest) -> ImageDataset:
    from ctxenc.data.voc import load_classification

    return load_classification(r.split, r.root, r.download, r.limit, r.load_size)


def _voc2012_seg(r: LoadRequest) -> ImageDataset:
    from ctxenc.data.voc import load_segmentation

    return load_segmentation(r.split, r.root, r.download, r.limit, r.load_size)


def _imagefolder(r: LoadRequest) -> ImageDataset:
    from ctxenc.data.imagefolder import load

    if r.download and not r.folder.is_dir():
        raise UserError(f"an image folder cannot be downloaded; {r.folder} does not exist.")
    return load(r.name, r.split, r.folder, r.limit, r.load_size)


def _imagefolder_tasks(folder: Path) -> tuple[str, ...]:
    from ctxenc.data.imagefolder import task_of

    return (task_of(folder),)


def _scenes_options():
    from ctxenc.data.scenes import ScenesConfig

    return ScenesConfig


from ctxenc.data.fashion_mnist import CLASSES as FASHION_CLASSES  # noqa: E402  (readers need ImageDataset above)
from ctxenc.data.voc import CLASSES as VOC_CLASSES  # noqa: E402

register_dataset(DatasetInfo("fashion_mnist", ("train", "test"), ("train", "test"), _fashion_mnist, ("single_label",),
                             class_names=FASHION_CLASSES, help="default; 28x28 grey, 10 classes"))
register_dataset(DatasetInfo("fashion_scenes", ("pool", "train", "test"), ("train", "test"), _fashion_scenes,
                             ("multi_label", "segmentation", "boxes"), pretrain_split="pool", options=_scenes_options(),
                             class_names=FASHION_CLASSES,
                             help="embedded VOC-like RGB scenes; pretraining pool, labelled train, test"))
register_dataset(DatasetInfo("cifar10", ("train", "test"), ("train", "test"), _cifar("cifar10"), ("single_label",),
                             class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")))
register_dataset(DatasetInfo("cifar100", ("train", "test"), ("train", "test"), _cifar("cifar100"), ("single_label",)))
register_dataset(DatasetInfo("stl10", ("train", "test", "unlabeled", "train+unlabeled"), ("train", "test"), _stl10,
                             ("single_label",), help="pretraining also on unlabeled or train+unlabeled"))
register_dataset(DatasetInfo("voc2007", ("train", "val", "trainval", "test"), ("trainval", "test"), _voc2007,
                             ("multi_label", "boxes"), class_names=VOC_CLASSES, help="multi-label classification and boxes"))
register_dataset(DatasetInfo("voc2012_seg", ("train", "val", "trainval"), ("train", "val"), _voc2012_seg, ("segmentation",),
                             class_names=VOC_CLASSES, help="segmentation"))
register_dataset(DatasetInfo("imagefolder", ("train", "test", "val"), ("train", "test"), _imagefolder, _imagefolder_tasks,
                             help="DIR itself, or imagefolder:SUB for DIR/SUB: class subfolders, or loose images for pretraining"))


from ctxenc.data.transforms import to_model_input  # noqa: E402  (re-exported: the foundation's entry point)

__all__ = ["DATASETS", "TASKS", "DatasetInfo", "ImageDataset", "LoadRequest", "dataset_info", "dataset_name", "dataset_spec",
           "dataset_tasks", "describe_datasets", "eval_splits", "load_dataset", "pretrain_split", "register_dataset",
           "resolve_root", "to_model_input"]
