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
