"""Fashion-MNIST from its IDX `.gz` files (Xiao et al., 2017).

Look-up order: an explicit root (`--data-root` / `$CTXENC_DATA`), Debian's
`dataset-fashion-mnist` package, torchvision's download when asked for (`--download`).
A root may hold the four files directly or in `fashion-mnist/` or torchvision's
`FashionMNIST/raw/`.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ctxenc.data import ImageDataset, LoadRequest, register_dataset
from ctxenc.errors import UserError

DEBIAN_ROOT = Path("/usr/share/datasets")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Read one IDX file (optionally gzipped), checking its magic number and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a damaged deflate stream inside the .gz
        raise UserError(f"cannot read {path}: {err}; the file is corrupt or truncated, replace it.") from None
    found = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
    if found != magic:
        raise UserError(f"{path} has magic number {found}, expected {magic}; it is not the right IDX file.")
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is too short to be an IDX file; replace it.")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise UserError(f"{path} holds {len(body)} bytes of data, but its header promises {int(np.prod(shape))}; the file is truncated or corrupt.")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def find_folder(root: Path | None) -> Path | None:
    """The first folder holding the train images, in look-up order."""
    # An explicit root is final: falling back to another copy would hide the user's mistake.
    if root is not None:
        candidates = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    else:
        candidates = [DEBIAN_ROOT / "fashion-mnist"]
    for folder in candidates:
        if (folder / FILES["train"][0]).exists():
            return folder
    return None


@register_dataset("fashion_mnist", ("train", "test"), ("train", "test"), ("single_label",), class_names=CLASSES,
                  help="default; 28x28 grey, 10 classes")
def load(r: LoadRequest) -> ImageDataset:
    return load_fashion_mnist(r.split, r.root, r.download)


def load_fashion_mnist(split: str, root: Path | None, download: bool = False) -> ImageDataset:
    if split not in FILES:
        raise UserError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}.")
    folder = find_folder(root)
    if folder is None and download:
        import torchvision

        target = root or Path.home() / ".cache" / "ctxenc"
        torchvision.datasets.FashionMNIST(str(target), train=True, download=True)
        folder = find_folder(target)
    if folder is None:
        where = f"{root} (from --data-root/CTXENC_DATA)" if root else str(DEBIAN_ROOT / "fashion-mnist")
        raise UserError(
            f"Fashion-MNIST not found in {where}: pass --data-root DIR "
            "(or set CTXENC_DATA) to a folder with its IDX .gz files, install Debian's package with "
            "'apt-get install dataset-fashion-mnist' (or 'make data'), or add --download."
        )
    image_file, label_file, count = FILES[split]
    images = read_idx(folder / image_file, IMAGE_MAGIC, 3)
    labels = read_idx(folder / label_file, LABEL_MAGIC, 1)
    if images.shape[1:] != (28, 28):
        raise UserError(f"{folder / image_file} holds {images.shape[1]}x{images.shape[2]} images; Fashion-MNIST's are 28x28.")
    if len(images) != len(labels):
        raise UserError(f"{folder} has {len(images)} {split} images but {len(labels)} labels; the files do not belong together.")
    if root is None and len(images) != count:
        raise UserError(f"{folder / image_file} holds {len(images)} images, expected {count}; reinstall the package.")
    if labels.size and labels.max() >= len(CLASSES):
        raise UserError(f"{folder / label_file} has label {labels.max()}; Fashion-MNIST labels are 0-9.")
    return ImageDataset(
        name="fashion_mnist",
        split=split,
        images=torch.from_numpy(images.copy()).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=len(CLASSES),
    )
