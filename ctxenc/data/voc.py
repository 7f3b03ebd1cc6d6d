"""PASCAL VOC from its devkit layout: VOC2007 multi-label classification and detection, VOC2012 segmentation.

Layout (the root torchvision's VOCDetection / VOCSegmentation take): `DIR/VOCdevkit/VOC2007/`
(or `VOC2012/`) holding `JPEGImages/<id>.jpg`, `ImageSets/Main/<split>.txt` (classification) or
`ImageSets/Segmentation/<split>.txt`, `Annotations/<id>.xml` and `SegmentationClass/<id>.png`.

- `voc2007`: 20-class multi-label classification and detection, splits trainval / test (also
  train, val). Labels follow the devkit's ground truth: 1 where the class has a non-difficult
  object, -1 where it appears only as objects marked difficult (the devkit's "0": such an image
  is ignored for that class when computing AP), 0 where absent. Boxes: int16 (N, max objects, 6)
  rows (class, x0, y0, x1, y1, difficult), 0-based pixel-inclusive on the warped image, -1 rows
  unused (difficult objects count neither way in detection AP).
- `voc2012_seg`: 21 classes (0 = background), splits train / val; `SegmentationClass` palette
  PNGs whose indices are the classes, 255 = object border / ignore.

Images come in many sizes; they are warped (aspect ratio not kept) to `load_size` squared when
first read, label maps with nearest-neighbour and boxes by the same warp, so no object is cut out
of an image whose labels name it. Segmentation and detection are therefore scored on the warped
images, not at the original resolution.
Decoded images are cached and memory-mapped (`ctxenc.data.cache`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ctxenc.data import ImageDataset, LoadRequest, register_dataset
from ctxenc.data.cache import decoded_arrays, file_fingerprint
from ctxenc.data.transforms import IGNORE_INDEX
from ctxenc.errors import UserError

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
SEG_CLASSES = ("background", *CLASSES)
IGNORE_LABEL = -1.0  # multi-label: class present only as difficult objects
CLASSIFICATION_SPLITS = ("train", "val", "trainval", "test")
SEGMENTATION_SPLITS = ("train", "val", "trainval")
READER_VERSION = 1  # bump when decoding changes, so old cache entries are not reused


def find_year(root: Path | None, year: str, download: bool, image_set: str, segmentation: bool) -> Path:
    """The VOC<year> folder under `root` (VOCdevkit/VOC<year>, VOC<year>, or root itself)."""
    if root is None:
        raise UserError(f"PASCAL VOC {year} needs --data-root DIR (or CTXENC_DATA) naming the folder that holds VOCdevkit/.")

    def search():
        for candidate in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
            if (candidate / "JPEGImages").is_dir():
                return candidate
        return None

    folder = search()
    if folder is None and download:
        import torchvision

        cls = torchvision.datasets.VOCSegmentation if segmentation else torchvision.datasets.VOCDetection
        cls(str(root), year=year, image_set=image_set, download=True)
        folder = search()
    if folder is None:
        raise UserError(f"PASCAL VOC {year} not found: expected {root / 'VOCdevkit' / f'VOC{year}' / 'JPEGImages'} "
                        "(torchvision's layout); point --data-root at the folder holding VOCdevkit/.")
    return folder


def read_ids(folder: Path, sets: str, split: str, limit: int | None) -> list[str]:
    path = folder / "ImageSets" / sets / f"{split}.txt"
    if not path.is_file():
        hint = " (VOC2007's test set is a separate archive, VOCtest_06-Nov-2007.tar: extract it into the same folder)" if split == "test" else ""
        raise UserError(f"VOC split list missing: expected {path}{hint}.")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"{path} lists no images.")
    return ids[:limit] if limit else ids


def require_files(paths: list[Path], what: str) -> None:
    for path in paths:
        if not path.is_file():
            raise UserError(f"VOC {what} missing: expected {path}.")


def _box_value(obj: ET.Element, tag: str, path: Path) -> int:
    text = obj.findtext(f"bndbox/{tag}")
    try:
        return round(float(text))  # a few VOC files write coordinates as "273.0"
    except (TypeError, ValueError):
        raise UserError(f"{path} has an object without a numeric bndbox/{tag} ({text!r}); replace the file.") from None


def parse_annotation(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """One Annotations XML -> (label, objects, size).

    label: float32 (20,) of 1 (present), -1 (only difficult), 0 (absent); objects: int64 (M, 6)
    rows (class, x0, y0, x1, y1, difficult), 0-based pixel-inclusive (VOC's bndbox is 1-based);
    size: (width, height) from <size>, None when the file does not give it.
    """
    try:
        tree = ET.parse(path)
    except ET.ParseError as err:
        raise UserError(f"{path} is not valid XML ({err}); replace the file.") from None
    label = np.zeros(len(CLASSES), dtype=np.float32)
    objects = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in CLASSES:
            raise UserError(f"{path} has an object of class {name!r}, which is not one of VOC's 20 classes.")
        k = CLASSES.index(name)
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if not difficult:
            label[k] = 1.0
        elif label[k] == 0.0:
            label[k] = IGNORE_LABEL
        x0, y0, x1, y1 = (_box_value(obj, tag, path) - 1 for tag in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:
            raise UserError(f"{path} has a {name} box whose max is below its min ({x0 + 1}, {y0 + 1}, {x1 + 1}, {y1 + 1}); replace the file.")
        objects.append((k, x0, y0, x1, y1, int(difficult)))
    width, height = (int(tree.getroot().findtext(f"size/{tag}") or 0) for tag in ("width", "height"))
    return label, np.array(objects, dtype=np.int64).reshape(-1, 6), (width, height) if width and height else None


def warp_boxes(objects: list[np.ndarray], sizes: list[tuple[int, int]], load_size: int) -> np.ndarray:
    """Per image objects (M_i, 6) in its own pixels and its (width, height) -> int16 (N, max M_i, 6)
    on the image warped to load_size squared, -1 rows unused.

    The pixels x0..x1 (the span x0 to x1 + 1) map to every warped pixel that span touches.
    """
    boxes = np.full((len(objects), max([1] + [len(o) for o in objects]), 6), -1, dtype=np.int16)
    for i, (obj, (width, height)) in enumerate(zip(objects, sizes)):
        scale = np.array([load_size / width, load_size / height])
        starts = np.floor(obj[:, 1:3] * scale + 1e-9)
        ends = np.ceil((obj[:, 3:5] + 1) * scale - 1e-9) - 1
        xyxy = np.clip(np.concatenate([starts, ends], 1), 0, load_size - 1)
        boxes[i, : len(obj)] = np.concatenate([obj[:, :1], xyxy, obj[:, 5:]], 1)
    return boxes


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, for an annotation without <size>."""
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read image {path} ({err}); replace or remove the file.") from None


def read_image(path: Path, size: int) -> np.ndarray:
    """A JPEG/PNG file -> uint8 (3, size, size), warped, RGB."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that is still >= size
            rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"cannot read image {path} ({err}); replace or remove the file.") from None
    return np.asarray(rgb).transpose(2, 0, 1)


def read_label_map(path: Path, size: int) -> np.ndarray:
    """A SegmentationClass palette PNG -> uint8 (size, size) class indices (0-20, 255)."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise UserError(f"{path} is a {img.mode} image; VOC label maps are palette PNGs whose indices are classes "
                                "(use SegmentationClass, not a colour rendering).")
            resized = img.resize((size, size), Image.NEAREST)
            indices = np.asarray(resized)
    except OSError as err:
        raise UserError(f"cannot read label map {path} ({err}); replace the file.") from None
    bad = (indices > len(SEG_CLASSES) - 1) & (indices != IGNORE_INDEX)
    if bad.any():
        raise UserError(f"{path} has class index {int(indices[bad][0])}; VOC segmentation indices are 0-20 and 255.")
    return indices


def load_classification(split: str, root: Path | None, download: bool = False, limit: int | None = None,
                        load_size: int = 256) -> ImageDataset:
    if split not in CLASSIFICATION_SPLITS:
        raise UserError(f"voc2007 has splits {', '.join(CLASSIFICATION_SPLITS)}, not {split!r}.")
    folder = find_year(root, "2007", download, split, segmentation=False)
    ids = read_ids(folder, "Main", split, limit)
    jpegs = [folder / "JPEGImages" / f"{i}.jpg" for i in ids]
    xmls = [folder / "Annotations" / f"{i}.xml" for i in ids]
    require_files(jpegs, "image")
    require_files(xmls, "annotation")
    annotations = [parse_annotation(p) for p in xmls]
    labels = np.stack([a[0] for a in annotations])
    boxes = warp_boxes([a[1] for a in annotations], [a[2] or image_size(j) for a, j in zip(annotations, jpegs)], load_size)
    key = {"reader": f"voc2007-{READER_VERSION}", "folder": str(folder.resolve()), "split": split, "size": load_size,
           "files": file_fingerprint(jpegs)}
    arrays = decoded_arrays(key, len(ids), {"images": ((3, load_size, load_size), "uint8")},
                            lambda i: {"images": read_image(jpegs[i], load_size)}, f"decode VOC2007 {split}")
    return ImageDataset("voc2007", split, torch.from_numpy(arrays["images"]), torch.from_numpy(labels),
                        len(CLASSES), "multi_label", boxes=torch.from_numpy(boxes))


def load_segmentation(split: str, root: Path | None, download: bool = False, limit: int | None = None,
                      load_size: int = 256) -> ImageDataset:
    if split not in SEGMENTATION_SPLITS:
        raise UserError(f"voc2012_seg has splits {', '.join(SEGMENTATION_SPLITS)}, not {split!r}.")
    folder = find_year(root, "2012", download, split, segmentation=True)
    ids = read_ids(folder, "Segmentation", split, limit)
    jpegs = [folder / "JPEGImages" / f"{i}.jpg" for i in ids]
    pngs = [folder / "SegmentationClass" / f"{i}.png" for i in ids]
    require_files(jpegs, "image")
    require_files(pngs, "label map")
    key = {"reader": f"voc2012_seg-{READER_VERSION}", "folder": str(folder.resolve()), "split": split,
           "size": load_size, "files": file_fingerprint(jpegs + pngs)}
    fields = {"images": ((3, load_size, load_size), "uint8"), "maps": ((load_size, load_size), "uint8")}
    arrays = decoded_arrays(key, len(ids), fields,
                            lambda i: {"images": read_image(jpegs[i], load_size), "maps": read_label_map(pngs[i], load_size)},
                            f"decode VOC2012 {split}")
    return ImageDataset("voc2012_seg", split, torch.from_numpy(arrays["images"]), None, len(SEG_CLASSES), "segmentation",
                        class_maps=torch.from_numpy(arrays["maps"]))


@register_dataset("voc2007", CLASSIFICATION_SPLITS, ("trainval", "test"), ("multi_label", "boxes"), class_names=CLASSES,
                  help="multi-label classification and boxes")
def load_voc2007(r: LoadRequest) -> ImageDataset:
    return load_classification(r.split, r.root, r.download, r.limit, r.load_size)


@register_dataset("voc2012_seg", SEGMENTATION_SPLITS, ("train", "val"), ("segmentation",), class_names=CLASSES, help="segmentation")
def load_voc2012_seg(r: LoadRequest) -> ImageDataset:
    return load_segmentation(r.split, r.root, r.download, r.limit, r.load_size)
