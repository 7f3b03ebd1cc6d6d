"""Tiny datasets written in each real on-disk format (nothing downloaded).

Every writer draws learnable images: class k is a block of a class-specific colour at a
class-specific place, on a noisy background, so a probe on random features beats chance.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from ctxenc.data.voc import CLASSES as VOC_CLASSES


def _palette(k: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + k)
    return rng.integers(80, 256, 3)


def class_image(k: int, h: int, w: int, rng: np.random.Generator, classes: int = 10) -> np.ndarray:
    """uint8 (h, w, 3): noise with a block of colour k in cell k of a 4x4 grid."""
    img = rng.integers(0, 50, (h, w, 3)).astype(np.uint8)
    r, c = divmod(k % 16, 4)
    img[r * h // 4 : (r + 1) * h // 4, c * w // 4 : (c + 1) * w // 4] = _palette(k)
    return img


def write_cifar(root: Path, variant: str = "cifar10", per_batch: int = 20, n_test: int = 40, seed: int = 0) -> Path:
    """cifar-10-batches-py/data_batch_1..5 + test_batch (or cifar-100-python/train + test), pickled dicts of
    bytes keys as the official release (Python 2 pickles read with encoding='bytes')."""
    rng = np.random.default_rng(seed)
    if variant == "cifar10":
        folder, batches, key, classes = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10
    else:
        folder, batches, key, classes = root / "cifar-100-python", ["train", "test"], b"fine_labels", 100
    folder.mkdir(parents=True, exist_ok=True)
    for name in batches:
        n = n_test if name in ("test_batch", "test") else per_batch * (5 if name == "train" else 1)
        labels = rng.integers(0, classes, n)
        data = np.stack([class_image(int(k), 32, 32, rng, classes).transpose(2, 0, 1).reshape(-1) for k in labels])
        batch = {b"batch_label": name.encode(), key: [int(k) for k in labels], b"data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return root


def write_stl10(root: Path, n_train: int = 40, n_test: int = 40, n_unlabeled: int = 24, seed: int = 0) -> Path:
    """stl10_binary/{train,test}_{X,y}.bin and unlabeled_X.bin: column-major 3x96x96 uint8, labels 1-10."""
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        labels = rng.integers(0, 10, n)
        images = np.stack([class_image(int(k), 96, 96, rng) for k in labels])  # (N, H, W, 3)
        # STL-10 stores each channel column by column: (N, 3, W, H) in C order.
        images.transpose(0, 3, 2, 1).astype(np.uint8).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
    return root


def voc_block(k: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Where class k's block lies in an h x w fixture image: (top, bottom, left, right), numpy slice ends."""
    r, c = divmod(k % 16, 4)
    return r * h // 4, (r + 1) * h // 4, c * w // 4, (c + 1) * w // 4


def _voc_scene(rng: np.random.Generator, h: int, w: int, present: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with one block per class in `present` and its class map (0 bg, k+1, 255 borders)."""
    img = rng.integers(0, 50, (h, w, 3)).astype(np.uint8)
    seg = np.zeros((h, w), dtype=np.uint8)
    for k in present:
        t, b, l, rr = voc_block(k, h, w)
        img[t:b, l:rr] = _palette(k)
        seg[t:b, l:rr] = 255
        seg[t + 1 : b - 1, l + 1 : rr - 1] = k + 1
    return img, seg


def write_voc(root: Path, year: str = "2007", splits: dict[str, int] | None = None, seed: int = 0,
              classes: tuple[int, ...] = (0, 6, 11, 14)) -> Path:
    """VOCdevkit/VOC<year>: JPEGImages (sizes vary), Annotations XML, ImageSets/{Main,Segmentation},
    SegmentationClass palette PNGs. Only `classes` appear; each image holds one or two of them,
    each a block whose bndbox (1-based, inclusive, as VOC's) is `voc_block`'s. The second object
    of every third image is marked difficult."""
    splits = splits or ({"trainval": 16, "test": 16} if year == "2007" else {"train": 16, "val": 16})
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    palette = [0] * 768
    for k in range(21):
        palette[3 * k : 3 * k + 3] = [int(v) for v in _palette(k)]
    palette[765:768] = [224, 224, 192]  # VOC draws the ignore border in cream
    counter = 0
    for split, n in splits.items():
        ids = []
        for i in range(n):
            counter += 1
            image_id = f"{year}_{counter:06d}"
            ids.append(image_id)
            present = [classes[i % len(classes)]]
            if i % 2:
                present.append(classes[(i + 1) % len(classes)])
            h, w = int(rng.integers(60, 100)), int(rng.integers(60, 100))
            img, seg = _voc_scene(rng, h, w, present)
            Image.fromarray(img).save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
            label_map = Image.fromarray(seg, mode="P")
            label_map.putpalette(palette)
            label_map.save(base / "SegmentationClass" / f"{image_id}.png")
            objects = "".join(
                f"<object><name>{VOC_CLASSES[k]}</name><pose>Unspecified</pose><truncated>0</truncated>"
                f"<difficult>{int(j == 1 and i % 3 == 0)}</difficult><bndbox><xmin>{left + 1}</xmin><ymin>{top + 1}</ymin>"
                f"<xmax>{right}</xmax><ymax>{bottom}</ymax></bndbox></object>"
                for j, k in enumerate(present)
                for top, bottom, left, right in [voc_block(k, h, w)]
            )
            (base / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
                f"<depth>3</depth></size>{objects}</annotation>")
        for sets in ("Main", "Segmentation"):
            (base / "ImageSets" / sets / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def write_imagefolder(root: Path, classes: tuple[str, ...] | None = ("cat", "dog", "ship"), per_class: int = 12,
                      test: bool = True, seed: int = 0, n_flat: int = 24) -> Path:
    """root/train/<class>/*.png|jpg (+ root/val/...) of varying sizes and modes; when classes is None,
    unlabeled images side by side in root/train and root/test (test=True) or in root itself."""
    rng = np.random.default_rng(seed)
    modes = ("RGB", "L", "RGBA", "P")
    if classes is None:
        for folder in (root / "train", root / "test") if test else (root,):
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n_flat):
                img = class_image(i % 4, int(rng.integers(50, 90)), int(rng.integers(50, 90)), rng)
                Image.fromarray(img).convert(modes[i % 4]).save(folder / f"img{i:03d}.png")
        return root
    for split in ("train", "val") if test else ("train",):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = class_image(k, int(rng.integers(50, 90)), int(rng.integers(50, 90)), rng)
                ext = ".jpg" if i % 2 else ".png"
                out = Image.fromarray(img).convert(modes[i % 4])
                if ext == ".jpg":
                    out = out.convert("RGB")
                out.save(folder / f"{name}_{i:03d}{ext}")
    return root
