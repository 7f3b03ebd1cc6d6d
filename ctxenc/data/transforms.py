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


def _shorter_side_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """The (h, w) of an h x w image resized to shorter side `size`, aspect ratio kept."""
    scale = size / min(h, w)
    return max(size, round(h * scale)), max(size, round(w * scale))


def _resize_shorter_side(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """x: (N, C, h, w) float -> shorter side `size`, aspect ratio kept."""
    shape = _shorter_side_shape(*x.shape[-2:], size)
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


def crop_flip_draws(n: int, shape: tuple[int, int], size: int, generator: torch.Generator) -> torch.Tensor:
    """The paper's pretraining augmentation, drawn for n images stored at `shape` (h, w): int64
    (n, 3) rows (top, left, flip) of a random `size` crop of the image at `load_size_for(size)`
    and a horizontal flip (p = 0.5), from the CPU `generator` (so crops do not depend on the device)."""
    h, w = _shorter_side_shape(*shape, load_size_for(size))  # (h, w) itself when stored at the load size
    tops = torch.randint(0, h - size + 1, (n,), generator=generator)
    lefts = torch.randint(0, w - size + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return torch.stack([tops, lefts, flips.long()], dim=1)


def crop_flip(images: torch.Tensor, draws: torch.Tensor, size: int) -> torch.Tensor:
    """images: uint8 (B, C, h, w) as stored, on any device; draws: (B, 3) from `crop_flip_draws`
    for them, on the same device -> float32 (B, C, size, size) in [-1, 1].

    Images not at `load_size_for(size)` are first resized to it (shorter side), so a crop covers
    the same ~89% of the image whatever the stored size. Images at it are cropped before they are
    converted: the same values, 0.79x of the conversion at 227 px.
    """
    store = load_size_for(size)
    if min(images.shape[-2:]) == store:
        return to_unit_range(_crops(images, draws, size))
    return _crops(_resize_shorter_side(to_unit_range(images), store, "bilinear"), draws, size)


def _crops(x: torch.Tensor, draws: torch.Tensor, size: int) -> torch.Tensor:
    """x: (B, C, h, w) of any dtype -> the windows (B, C, size, size) `draws` name, flipped ones
    read right to left: on the CPU one copy per image (measured ~20x faster there than one
    gather), elsewhere one gather (not a kernel per image)."""
    return _copied_crops(x, draws, size) if x.device.type == "cpu" else _gathered_crops(x, draws, size)


def _copied_crops(x: torch.Tensor, draws: torch.Tensor, size: int) -> torch.Tensor:
    out = torch.empty(*x.shape[:2], size, size, dtype=x.dtype)
    for i, (top, left, flip) in enumerate(draws.tolist()):
        window = x[i, :, top : top + size, left : left + size]
        out[i] = window.flip(-1) if flip else window
    return out


def _gathered_crops(x: torch.Tensor, draws: torch.Tensor, size: int) -> torch.Tensor:
    span = torch.arange(size, device=x.device)
    rows = draws[:, 0:1] + span  # (B, size)
    cols = draws[:, 1:2] + torch.where(draws[:, 2:3].bool(), size - 1 - span, span)  # (B, size)
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


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
        new_h, new_w = _shorter_side_shape(h, w, to_size)
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
