"""The standard GAN loss (Goodfellow et al. 2014) with the non-saturating generator term.

As in Pathak et al. (2016), Eq. 2, only the generator sees the context and there is no noise
vector; the discriminator judges real images against completed ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x) - log(1 - D(G(z))), averaged: real -> 1, fake -> 0."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating form, which keeps gradients when D wins early."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
