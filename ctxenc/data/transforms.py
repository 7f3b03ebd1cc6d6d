"""From stored uint8 images to encoder input: resize / crop / pad, augmentation, aligned label maps.

One geometry rule for every dataset and encoder, so a reader can predict what a model sees:

- sizes within 15% of the encoder's input size (Fashion-MNIST 28 -> 32, stored 256 -> AlexNet's
  227) are padded or centre-cropped, so no pixel is resampled;
- anything else (CIFAR 32 -> 227, STL-10 96 -> 32 or 128) is resized, shorter side to the input
  size (bilinear with antialiasing; label maps nearest-neighbour), then centre-cropped.

Datasets of variable image size (VOC, image folders) are stored at `load_size_for(input_size)`
(256 for AlexNet's 227, the ImageNet convention), so evaluation takes a centre crop and
pretraining a random crop of the input size from the same stored image.

Normalisation is the paper's: pixels scaled to [-1, 1] (the decoder ends in Tanh); the dataset
mean fills the hidden pixels of a context encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NO_RESAMPLE_MARGIN = 0.15
STORE_SCALE = 256 / 227  # stored size / input size: AlexNet's 256 -> 227 crops
IGNORE_INDEX = 255  # label-map value that no metric counts (VOC's object borders)


def load_size_for(input_size: int) -> int:
    """The square size variable-size images are stored at for an encoder of `input_size`."""
    return round(input_size * STORE_SCALE)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def _needs_resample(h: int, w: int, size: int) -> bool:
    return max(abs(h - size), abs(w - size)) > NO_RESAMPLE_MARGIN * size


def _resize_shorter_side(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """x: (N, C, h, w) float -> shorter side `size`, aspect ratio kept."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    if mode == "bilinear":
        return F.interpolate(x, shape, mode="bilinear", align_corners=False, antialias=True)
    # nearest-exact samples pixel centres, as bilinear with align_corners=False does: maps stay aligned.
    return F.interpolate(x, shape, mode="nearest-exact")


def _pad_or_crop(x: torch.Tensor, size: int, pad_value: float) -> torch.Tensor:
    """Centre-crop the sides longer than `size`, pad the shorter ones around the centre."""
    h, w = x.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    x = x[..., top : top + size, left : left + size]
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x.contiguous()
    pt, pl = (size - h) // 2, (size - w) // 2
    return F.pad(x, (pl, size - w - pl, pt, size - h - pt), value=pad_value)


def to_model_input(images: torch.Tensor, size: int, chunk: int = 512) -> torch.Tensor:
    """uint8 (N, C, h, w) -> float32 (N, C, size, size) in [-1, 1], by the rule above.

    Padding is black (-1, Fashion-MNIST's background). Works in chunks, so a memory-mapped
    dataset is never converted to float all at once beyond the output.
    """
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return to_unit_range(images)
    out = torch.empty(n, c, size, size, device=images.device)
    for i in range(0, n, chunk):
        x = to_unit_range(images[i : i + chunk])
        if _needs_resample(h, w, size):
            x = _resize_shorter_side(x, size, "bilinear")
        out[i : i + chunk] = _pad_or_crop(x, size, -1.0)
    return out


def fit_label_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Integer (N, h, w) class maps -> (N, size, size) of the same dtype, aligned with `to_model_input` of their images.

    Nearest-neighbour resampling (a class index is never blended); padding is IGNORE_INDEX.
    """
    h, w = maps.shape[-2:]
    if (h, w) == (size, size):
        return maps
    x = maps.unsqueeze(1).float()
    if _needs_resample(h, w, size):
        x = _resize_shorter_side(x, size, "nearest")
    return _pad_or_crop(x, size, float(IGNORE_INDEX)).squeeze(1).to(maps.dtype)


def random_crop_flip(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """The paper's pretraining augmentation: a random `size` crop and a horizontal flip (p = 0.5).

    images: uint8 (B, C, h, w), on any device -> float32 (B, C, size, size) in [-1, 1].
    Images not already at `load_size_for(size)` are first resized to it (shorter side), so a
    crop covers the same ~89% of the image whatever the stored size. Offsets and flips come from
    the CPU `generator`, so they do not depend on the device.
    """
    x = to_unit_range(images)
    store = load_size_for(size)
    if min(x.shape[-2:]) != store:
        x = _resize_shorter_side(x, store, "bilinear")
    b, _, h, w = x.shape
    tops = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    lefts = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    flips = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    crops = torch.stack([x[i, :, t : t + size, l : l + size] for i, (t, l) in enumerate(zip(tops, lefts))])
    return torch.where(flips.view(b, 1, 1, 1), crops.flip(-1), crops)


def fit_boxes(boxes: torch.Tensor, from_size: tuple[int, int], to_size: int) -> torch.Tensor:
    """Boxes of images of size from_size = (h, w) -> the same boxes on `to_model_input(images, to_size)`.

    boxes: integer (N, M, 5 or 6), rows (class, x0, y0, x1, y1[, difficult]) in pixel-inclusive
    coordinates, -1 rows unused -> the same shape and dtype. A resize maps the pixels x0..x1 (the
    span x0 to x1 + 1) to every output pixel that span touches; a crop shifts and clips, and a box
    cropped out entirely becomes an unused row.
    """
    h, w = from_size
    if (h, w) == (to_size, to_size):
        return boxes
    out = boxes.clone()
    used = boxes[..., 0] >= 0
    x = boxes[..., 1:5].double()  # (N, M, 4) x0, y0, x1, y1
    if _needs_resample(h, w, to_size):
        scale = to_size / min(h, w)
        new_h, new_w = max(to_size, round(h * scale)), max(to_size, round(w * scale))  # as _resize_shorter_side
        factor = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], dtype=torch.float64)
        # Tolerance: 3 * (64 / 32) should be 6 whatever the float rounding does.
        starts = (x[..., :2] * factor[:2] + 1e-9).floor()
        ends = ((x[..., 2:] + 1) * factor[2:] - 1e-9).ceil() - 1
        x = torch.cat([starts, ends], -1)
        h, w = new_h, new_w
    # _pad_or_crop: crop the centre of a longer side, then pad a shorter one around the centre.
    top, left = max(0, (h - to_size) // 2), max(0, (w - to_size) // 2)
    pad_top, pad_left = (to_size - min(h, to_size)) // 2, (to_size - min(w, to_size)) // 2
    shift = torch.tensor([pad_left - left, pad_top - top] * 2, dtype=torch.float64)
    x = x + shift
    inside = used & (x[..., 2] >= 0) & (x[..., 3] >= 0) & (x[..., 0] <= to_size - 1) & (x[..., 1] <= to_size - 1)
    out[..., 1:5] = x.clamp(0, to_size - 1).to(boxes.dtype)
    out[~inside] = -1
    return out
