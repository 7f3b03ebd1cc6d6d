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


def loss_weights(mask: torch.Tensor, overlap_px: int, overlap_weight: float) -> torch.Tensor:
    """Per-pixel reconstruction weights: 1 in the hole, `overlap_weight` on its border, 0 elsewhere."""
    if overlap_weight < 0:
        raise UserError(f"overlap weight must be non-negative, got {overlap_weight}.")
    border = overlap_border(mask, overlap_px)
    return mask.float() + overlap_weight * border.float()


def apply_mask(images: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor:
    """Hide masked pixels: images (B, C, H, W), mask (B, 1, H, W), fill a scalar or (C,) mean."""
    if mask.shape[-2:] != images.shape[-2:]:
        raise UserError(f"mask of size {tuple(mask.shape[-2:])} does not fit images of size {tuple(images.shape[-2:])}.")
    fill = torch.as_tensor(fill, dtype=images.dtype).reshape(-1, 1, 1)
    return torch.where(mask, fill.expand_as(images[0]), images)
