"""Filling the hole, and the overlap border the prediction shares with the context."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctxenc.errors import UserError


def overlap_border(mask: torch.Tensor, overlap_px: int) -> torch.Tensor:
    """Pixels within `overlap_px` (Chebyshev distance) of the hole, outside it. bool like mask.

    The context encoder predicts the hole dilated by this border, so its fill blends with the
    context (paper: 7 px, code: 4 px at 128x128).
    """
    if overlap_px < 0:
        raise UserError(f"overlap must be at least 0 pixels, got {overlap_px}.")
    if overlap_px == 0:
        return torch.zeros_like(mask)
    k = 2 * overlap_px + 1
    dilated = F.max_pool2d(mask.float(), kernel_size=k, stride=1, padding=overlap_px) > 0
    return dilated & ~mask


LOSS_REGIONS = ("hole", "image", "hole+ring")


def loss_weights(mask: torch.Tensor, region: str, overlap_px: int, overlap_weight: float, ring: bool = False) -> torch.Tensor:
    """Per-pixel reconstruction weights (B, 1, H, W) for a mask bool (B, 1, H, W); `region` says where
    the reconstruction loss looks:

    - `hole`: the hidden pixels only, weight 1 (the paper's Eq. 1). With `ring` (the caller says
      so for the paper's centre inpainting model, Sec. 3.3/4.1) also the `overlap_px` border
      around the hole, at `overlap_weight` (the paper: 10x).
    - `image`: every pixel, weight 1 (the released random-region script `train_random.lua`).
    - `hole+ring`: the hole at 1 and its border at `overlap_weight` for every mask shape. For
      random regions and blocks at 32 px with a 1 px ring at 10x, most of the weight then falls on
      visible pixels, so the loss is mostly an autoencoder's.
    """
    if region not in LOSS_REGIONS:
        raise UserError(f"unknown loss region {region!r}; valid: {', '.join(LOSS_REGIONS)}.")
    if overlap_weight < 0:
        raise UserError(f"overlap weight must be non-negative, got {overlap_weight}.")
    if region == "image":
        return torch.ones_like(mask, dtype=torch.float32)
    if region == "hole" and not ring:
        return mask.float()
    return mask.float() + overlap_weight * overlap_border(mask, overlap_px).float()


def apply_mask(images: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor:
    """Hide masked pixels: images (B, C, H, W), mask (B, 1, H, W), fill a scalar or (C,) mean."""
    if mask.shape[-2:] != images.shape[-2:]:
        raise UserError(f"mask of size {tuple(mask.shape[-2:])} does not fit images of size {tuple(images.shape[-2:])}.")
    fill = torch.as_tensor(fill, dtype=images.dtype).reshape(-1, 1, 1)
    return torch.where(mask, fill.expand_as(images[0]), images)
