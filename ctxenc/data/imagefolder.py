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
read, then cached and memory-mapped (`ctxenc.data.cache`). When that decoded cache would not fit
on the disk, or with the option `cache: false` (a suite's `{name: imagefolder:SUB, cache: false}`),
the images are decoded per batch instead (`ctxenc.data.streaming`), by the same function, so the
batches are the same; one line says so. `--limit N` takes N images evenly spaced over the sorted
file list, so every class of a labelled folder still appears.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ctxenc import distributed
from ctxenc.data import ImageDataset, LoadRequest, register_dataset
from ctxenc.data.cache import decoded_arrays
from ctxenc.data.manifest import folder_listing
from ctxenc.data.streaming import StreamedImages
from ctxenc.errors import UserError
from ctxenc.io import cache_root

SPLITS = ("train", "test")
READER_VERSION = 1


@dataclass(frozen=True)
class ImageFolderOptions:
    """cache: decode every image once into the decoded cache (memory-mapped after); false: decode
    them per batch while training, as is done anyway when the cache would not fit on the disk."""

    cache: bool = True


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


def read_square(path: Path | str, size: int) -> torch.Tensor:
    """An image file of any size and mode -> uint8 (3, size, size): shorter side to size, centre crop.

    The one decoding of image folders, for the cache and for streaming alike. PIL, not
    torchvision's decoders: those were measured 1.4x (load size 144) to 2.2x (256) faster per
    core, but crashed the process (a segmentation fault) on damaged files (tests/test_fuzz.py).
    """
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
    return torch.from_numpy(np.asarray(square).transpose(2, 0, 1).copy())


def load(name: str, split: str, folder: Path, limit: int | None = None, load_size: int = 256,
         cache: bool = True) -> ImageDataset:
    """The split's images: memory-mapped from the decoded cache, or (`cache` false, or a disk too
    small for the cache) `StreamedImages`, decoded per batch."""
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
    why_stream = None if cache else "cache: false"
    if cache:
        # The listing's digest covers every file's path, size and mtime; `keep` follows from it and the count.
        key = {"reader": f"imagefolder-{READER_VERSION}", "folder": str(listing.folder), "size": load_size,
               "files": listing.digest, "items": len(keep)}
        try:
            arrays = decoded_arrays(key, len(keep), {"images": ((3, load_size, load_size), "uint8")},
                                    lambda i: {"images": read_square(listing.files()[keep[i]], load_size).numpy()},
                                    f"decode {path.name}")
            images = torch.from_numpy(arrays["images"])
        except UserError:
            why_stream = _cache_too_big(len(keep) * 3 * load_size**2)
            if why_stream is None:
                raise
    if why_stream:
        files = listing.files()
        images = StreamedImages(np.array([os.fsencode(files[k]) for k in keep]), load_size, read_square)
        workers = f"{images.workers} worker{'s' * (images.workers != 1)}"
        print(f"ctxenc: imagefolder {path}: streaming (decoding per batch in {workers}): {why_stream}.",
              file=sys.stderr, flush=True)
    labels = listing.labels()
    if labels is None:
        return ImageDataset(name, split, images, None, 0, "unlabeled")
    return ImageDataset(name, split, images, torch.from_numpy(labels[keep]), len(listing.classes), "single_label")


def _cache_too_big(needed: int) -> str | None:
    """Why the images stream, when the decoded cache (`needed` bytes) did not fit on its disk; None if it
    would fit (the refusal was for another reason: it stands)."""
    folder = cache_root() / "decoded"
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free  # the refused build has given its reservation back
    if needed <= free:
        return None
    if distributed.is_main():  # refused before the barrier the other processes wait at (`decoded_arrays`)
        distributed.wait_for_main()
    return f"the decoded cache needs {needed / 1e9:.1f} GB, the disk has {free / 1e9:.1f} GB free"


@register_dataset("imagefolder", ("train", "test", "val"), ("train", "test"), lambda folder: (task_of(folder),),
                  options=ImageFolderOptions,
                  help="DIR itself, or imagefolder:SUB for DIR/SUB: class subfolders, or loose images for pretraining")
def load_request(r: LoadRequest) -> ImageDataset:
    if r.download and not r.folder.is_dir():
        raise UserError(f"an image folder cannot be downloaded; {r.folder} does not exist.")
    return load(r.name, r.split, r.folder, r.limit, r.load_size, r.options.cache)
