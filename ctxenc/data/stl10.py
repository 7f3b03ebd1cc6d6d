"""STL-10 (Coates et al., 2011) from its binary files, memory-mapped.

Layout (the root torchvision's STL10 takes): `DIR/stl10_binary/` holding `train_X.bin`,
`train_y.bin`, `test_X.bin`, `test_y.bin` and `unlabeled_X.bin`. An `_X.bin` file is uint8
images of 3 x 96 x 96, each channel stored column-major (as MATLAB wrote it); a `_y.bin` file is
one uint8 label per image, 1-10.

Splits: `train` (5k labelled), `test` (8k), `unlabeled` (100k, 2.7 GB) and `train+unlabeled`
(pretraining). The files are memory-mapped, so only the images a batch touches are read; only
`train+unlabeled` is copied into memory (the two files are concatenated). Read here, not through
torchvision, so files that differ from the official release (a user's own data) load too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ctxenc.data import ImageDataset, LoadRequest, register_dataset
from ctxenc.errors import UserError

FOLDER = "stl10_binary"
IMAGE_BYTES = 3 * 96 * 96
SPLITS = ("train", "test", "unlabeled", "train+unlabeled")
CLASSES = 10


def read_images(path: Path, limit: int | None) -> np.ndarray:
    """`_X.bin` -> uint8 (N, 3, 96, 96) view of a copy-on-write memory map (rows first)."""
    if not path.is_file():
        raise UserError(f"STL-10 file missing: expected {path}; extract stl10_binary.tar.gz there.")
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise UserError(f"{path} holds {size} bytes, not a whole number of 3x96x96 images; the file is truncated or corrupt.")
    images = np.memmap(path, dtype=np.uint8, mode="c").reshape(-1, 3, 96, 96)
    if limit:
        images = images[:limit]
    return images.transpose(0, 1, 3, 2)  # column-major planes -> rows first


def read_labels(path: Path, image_path: Path, limit: int | None) -> np.ndarray:
    """`_y.bin` -> int64 (N,) in 0-9, checked against the image file's count."""
    if not path.is_file():
        raise UserError(f"STL-10 file missing: expected {path}; extract stl10_binary.tar.gz there.")
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    count = image_path.stat().st_size // IMAGE_BYTES
    if len(labels) != count:
        raise UserError(f"{path} has {len(labels)} labels for {count} images; the label and image files do not belong together.")
    if limit:
        labels = labels[:limit]
    if labels.size and (labels.min() < 1 or labels.max() > CLASSES):
        raise UserError(f"{path} has labels outside 1-10; it is not an STL-10 label file.")
    return labels - 1


def find_folder(root: Path) -> Path | None:
    for candidate in (root / FOLDER, root):
        if (candidate / "train_X.bin").is_file() or (candidate / "unlabeled_X.bin").is_file():
            return candidate
    return None


def load(split: str, root: Path | None, download: bool = False, limit: int | None = None) -> ImageDataset:
    if split not in SPLITS:
        raise UserError(f"stl10 has splits {', '.join(SPLITS)}, not {split!r}.")
    if root is None:
        raise UserError(f"stl10 needs --data-root DIR (or CTXENC_DATA) naming the folder that holds {FOLDER}/.")
    folder = find_folder(root)
    if folder is None and download:
        import torchvision

        torchvision.datasets.STL10(str(root), split="train", download=True)
        folder = find_folder(root)
    if folder is None:
        raise UserError(f"stl10 not found: expected {root / FOLDER / 'train_X.bin'} (torchvision's layout); "
                        "point --data-root at the folder holding it, or add --download.")
    if split == "train+unlabeled":
        train = load("train", root, limit=limit)
        rest = None if limit is None else limit - len(train)
        if rest == 0:
            return ImageDataset("stl10", split, train.images, None, CLASSES, "unlabeled")
        unlabeled = read_images(folder / "unlabeled_X.bin", rest)
        images = np.concatenate([train.images.numpy(), unlabeled])
        return ImageDataset("stl10", split, torch.from_numpy(images), None, CLASSES, "unlabeled")
    images = read_images(folder / f"{split}_X.bin", limit)
    if split == "unlabeled":
        return ImageDataset("stl10", split, torch.from_numpy(images), None, CLASSES, "unlabeled")
    labels = read_labels(folder / f"{split}_y.bin", folder / f"{split}_X.bin", limit)
    return ImageDataset("stl10", split, torch.from_numpy(images), torch.from_numpy(labels), CLASSES, "single_label")


@register_dataset("stl10", SPLITS, ("train", "test"), ("single_label",), help="pretraining also on unlabeled or train+unlabeled")
def load_request(r: LoadRequest) -> ImageDataset:
    return load(r.split, r.root, r.download, r.limit)
