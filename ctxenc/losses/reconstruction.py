"""Normalised masked L2 (Pathak et al. 2016, Eq. 1): ||M * (x - F((1 - M) * x))||^2."""

from __future__ import annotations

import torch


def masked_l2(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean squared error.

    prediction, target: (B, C, H, W); weights: (B, 1, H, W), e.g. 1 in the hole, 10 on the
    overlap border, 0 on the context (`ctxenc.masks.loss_weights`), or all ones for an
    autoencoder.

    loss = sum_{b,c,h,w} w_bhw (pred - target)^2 / (C * sum_{b,h,w} w_bhw)

    Normalising by the total weight makes the loss a per-pixel mean, independent of how large
    the hole is and comparable between mask shapes.
    """
    squared = (prediction - target).pow(2)
    total = weights.sum() * prediction.shape[1]
    return (squared * weights).sum() / total.clamp_min(1e-12)
