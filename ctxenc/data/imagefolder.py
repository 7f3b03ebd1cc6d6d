"""Any folder of images: one subfolder per class (labelled) or images side by side (unlabeled).

`--dataset imagefolder` reads the data root itself; `--dataset imagefolder:SUB` reads
`DATA_ROOT/SUB` (so one root can hold ImageNet, Paris StreetView and VOC). Within that folder:

- split `train`: `FOLDER/train/` if it exists, else `FOLDER` itself;
- split `test`: `FOLDER/test/` or `FOLDER/val/`.

A split folder whose subfolders hold images is labelled (classes = sorted subfolder names, as
torchvision's ImageFolder; images found recursively) and the test split must have the same
classes; a split folder holding image files directly is unlabeled (pretraining only).

Images are resized (shorter side to `load_size`, bilinear) and centre-cropped to a square when
first read, then cached and memory-mapped (`ctxenc.data.cache`). `--limit N` takes N images
evenly spaced over the sorted file list, so every class of a labelled folder still appears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ctxenc.data import ImageDataset
from ctxenc.data.cache import decoded_arrays, file_fingerprint
from ctxenc.errors import UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")
READER_VERSION = 1


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


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


def scan(folder: Path) -> tuple[list[Path], list[int] | None, list[str]]:
    """(files, labels or None, class names): labelled when subfolders hold images, else unlabeled."""
    loose = sorted(p for p in folder.iterdir() if is_image(p))
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in ("train", "test", "val") and any(is_image(f) for f in p.rglob("*")))
    if loose and classes:
        raise UserError(f"{folder} mixes class subfolders ({classes[0]}/ ...) with loose images ({loose[0].name} ...); "
                        "move the loose images into a class folder, or into a folder of their own for unlabeled data.")
    if classes:
        files, labels = [], []
        for k, name in enumerate(classes):
            found = sorted(p for p in (folder / name).rglob("*") if is_image(p))
            files += found
            labels += [k] * len(found)
        return files, labels, classes
    if not loose:
        raise UserError(f"{folder} holds no images ({', '.join(EXTENSIONS)}): expected class subfolders of images, "
                        "or image files directly for unlabeled data.")
    return loose, None, []


def task_of(folder: Path) -> str:
    """'single_label' or 'unlabeled', from the train split's layout (no image is decoded)."""
    _, labels, _ = scan(split_folder(folder, "train"))
    return "unlabeled" if labels is None else "single_label"


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
    files, labels, classes = scan(path)
    if split == "test":
        _, _, train_classes = scan(split_folder(folder, "train"))
        if train_classes != classes:
            raise UserError(f"{path} has classes {classes[:3]}... but the train split has {train_classes[:3]}...; "
                            "both splits need the same class subfolders.")
    if limit and limit < len(files):
        keep = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in keep]
        labels = None if labels is None else [labels[i] for i in keep]
    key = {"reader": f"imagefolder-{READER_VERSION}", "folder": str(path.resolve()), "size": load_size,
           "files": file_fingerprint(files)}
    arrays = decoded_arrays(key, len(files), {"images": ((3, load_size, load_size), "uint8")},
                            lambda i: {"images": read_square(files[i], load_size)}, f"decode {path.name}")
    images = torch.from_numpy(arrays["images"])
    if labels is None:
        return ImageDataset(name, split, images, None, 0, "unlabeled")
    return ImageDataset(name, split, images, torch.tensor(labels, dtype=torch.int64), len(classes), "single_label")
