"""Any folder of images: one subfolder per class (labelled) or images side by side (unlabeled).

`--dataset imagefolder` reads the data root itself; `--dataset imagefolder:SUB` reads
`DATA_ROOT/SUB` (so one root can hold ImageNet, Paris StreetView and VOC). Within that folder:

- split `train`: `FOLDER/train/` if it exists, else `FOLDER` itself;
- split `test`: `FOLDER/test/` or `FOLDER/val/`.

A split folder whose subfolders hold images is labelled (classes = sorted subfolder names, as
torchvision's ImageFolder; images found recursively) and the test split must have the same
classes; a split folder holding image files directly is unlabeled (pretraining only).

The folder is listed once (`ctxenc.data.manifest`: no stat() per image on later loads). Images
are resized (shorter side to `load_size`, bilinear) and centre-cropped to a square when first
read, then cached and memory-mapped (`ctxenc.data.cache`). `--limit N` takes N images
evenly spaced over the sorted file list, so every class of a labelled folder still appears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ctxenc.data import ImageDataset, LoadRequest, register_dataset
from ctxenc.data.cache import decoded_arrays
from ctxenc.data.manifest import folder_listing
from ctxenc.errors import UserError

SPLITS = ("train", "test")
READER_VERSION = 1


def split_folder(folder: Path, split: str) -> Path:
    if split not in SPLITS:
        raise UserError(f"an image folder has splits 'train' and 'test', not {split!r}.")
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist; pass --data-root DIR (and imagefolder:SUBFOLDER) naming it.")
    if split == "train":
        return folder / "train" if (folder / "train").is_dir() else folder
    for name in ("test", "val"):
        if (folder / name).is_dir():
            return folder / name
    raise UserError(f"image folder {folder} has no test split: expected {folder / 'test'} or {folder / 'val'} "
                    f"beside {folder / 'train'}.")


def task_of(folder: Path) -> str:
    """'single_label' or 'unlabeled', from the train split's listing (no image is decoded)."""
    return "single_label" if folder_listing(split_folder(folder, "train")).classes else "unlabeled"


def read_square(path: Path, size: int) -> np.ndarray:
    """An image file of any size and mode -> uint8 (3, size, size): shorter side to size, centre crop."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that is still >= size
            img = img.convert("RGB")
            w, h = img.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            left, top = (nw - size) // 2, (nh - size) // 2
            square = img.resize((nw, nh), Image.BILINEAR).crop((left, top, left + size, top + size))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {path} ({err}); replace or remove the file.") from None
    return np.asarray(square).transpose(2, 0, 1)


def load(name: str, split: str, folder: Path, limit: int | None = None, load_size: int = 256) -> ImageDataset:
    path = split_folder(folder, split)
    listing = folder_listing(path)
    if split == "test":
        train_classes = folder_listing(split_folder(folder, "train")).classes
        if train_classes != listing.classes:
            raise UserError(f"{path} has classes {list(listing.classes[:3])}... but the train split has "
                            f"{list(train_classes[:3])}...; both splits need the same class subfolders.")
    keep = np.arange(len(listing))
    if limit and limit < len(listing):
        keep = np.linspace(0, len(listing) - 1, limit).round().astype(int)
    # The listing's digest covers every file's path, size and mtime; `keep` follows from it and the count.
    key = {"reader": f"imagefolder-{READER_VERSION}", "folder": str(listing.folder), "size": load_size,
           "files": listing.digest, "items": len(keep)}
    arrays = decoded_arrays(key, len(keep), {"images": ((3, load_size, load_size), "uint8")},
                            lambda i: {"images": read_square(listing.files()[keep[i]], load_size)}, f"decode {path.name}")
    images = torch.from_numpy(arrays["images"])
    labels = listing.labels()
    if labels is None:
        return ImageDataset(name, split, images, None, 0, "unlabeled")
    return ImageDataset(name, split, images, torch.from_numpy(labels[keep]), len(listing.classes), "single_label")


@register_dataset("imagefolder", ("train", "test", "val"), ("train", "test"), lambda folder: (task_of(folder),),
                  help="DIR itself, or imagefolder:SUB for DIR/SUB: class subfolders, or loose images for pretraining")
def load_request(r: LoadRequest) -> ImageDataset:
    if r.download and not r.folder.is_dir():
        raise UserError(f"an image folder cannot be downloaded; {r.folder} does not exist.")
    return load(r.name, r.split, r.folder, r.limit, r.load_size)
