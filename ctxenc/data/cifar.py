"""CIFAR-10 and CIFAR-100 from torchvision's on-disk format: the "python version" pickle batches.

Layout (the root torchvision's CIFAR10 / CIFAR100 take): `DIR/cifar-10-batches-py/` holding
`data_batch_1` .. `data_batch_5` and `test_batch`, or `DIR/cifar-100-python/` holding `train`
and `test`. Each batch is a pickled dict: `data` uint8 (N, 3072) = three 32x32 planes (R, G, B)
row by row, and `labels` (CIFAR-10) or `fine_labels` (CIFAR-100, 100 classes).

The files are read here rather than through torchvision, whose classes refuse files whose
checksum differs from the official release: a user's own data in this format must load. The
unpickler only accepts the types these files hold (dicts, lists, numpy arrays), so a malicious
pickle cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from ctxenc.data import ImageDataset, LoadRequest, register_dataset
from ctxenc.config import brief
from ctxenc.errors import UserError

VARIANTS = {
    # name: (folder, train files, test files, label key, classes, torchvision class)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100, "CIFAR100"),
}
TASK = "single_label"
SPLITS = ("train", "test")
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch -> (images uint8 (N, 3, 32, 32), labels int64 (N,))."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except Exception as err:  # a damaged pickle fails in any of a dozen ways (MemoryError, LookupError, ...)
        raise UserError(f"cannot read {path} as a CIFAR pickle batch ({brief(str(err) or type(err).__name__)}); "
                        "replace the file.") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} does not hold a CIFAR batch (a dict with 'data' and labels); replace the file.")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise UserError(f"{path} has keys {sorted(batch)}, but a CIFAR batch needs 'data' and {label_key!r}.")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path} holds 'data' of shape {data.shape} and type {data.dtype}; CIFAR's is uint8 (N, 3072).")
    if len(labels) != len(data):
        raise UserError(f"{path} has {len(data)} images but {len(labels)} labels; the batch is corrupt.")
    return data.reshape(-1, 3, 32, 32), labels


def find_folder(root: Path, folder: str, first_file: str) -> Path | None:
    """`root/folder` (torchvision's layout) or `root` itself when it holds the batches."""
    for candidate in (root / folder, root):
        if (candidate / first_file).is_file():
            return candidate
    return None


def load(variant: str, split: str, root: Path | None, download: bool = False) -> ImageDataset:
    folder_name, train_files, test_files, label_key, num_classes, tv_class = VARIANTS[variant]
    if split not in SPLITS:
        raise UserError(f"{variant} has splits 'train' and 'test', not {split!r}.")
    if root is None:
        raise UserError(f"{variant} needs --data-root DIR (or CTXENC_DATA) naming the folder that holds {folder_name}/.")
    folder = find_folder(root, folder_name, train_files[0])
    if folder is None and download:
        import torchvision

        getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
        folder = find_folder(root, folder_name, train_files[0])
    if folder is None:
        raise UserError(f"{variant} not found: expected {root / folder_name / train_files[0]} (torchvision's layout); "
                        "point --data-root at the folder holding it, or add --download.")
    files = train_files if split == "train" else test_files
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{variant} is incomplete: expected {folder / missing[0]}; extract the whole archive again.")
    parts = [read_batch(folder / name, label_key) for name in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{folder} has {split} label {labels.max()}; {variant} labels are 0-{num_classes - 1}.")
    return ImageDataset(name=variant, split=split, images=torch.from_numpy(images),
                        labels=torch.from_numpy(labels), num_classes=num_classes, task=TASK)


@register_dataset("cifar10", SPLITS, ("train", "test"), (TASK,),
                  class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
def load_cifar10(r: LoadRequest) -> ImageDataset:
    return load("cifar10", r.split, r.root, r.download)


@register_dataset("cifar100", SPLITS, ("train", "test"), (TASK,))
def load_cifar100(r: LoadRequest) -> ImageDataset:
    return load("cifar100", r.split, r.root, r.download)
