"""Losses, one per file: reconstruction (masked L2 with overlap weights) and adversarial."""

from ctxenc.losses.adversarial import discriminator_loss, generator_loss
from ctxenc.losses.reconstruction import masked_l2

__all__ = ["discriminator_loss", "generator_loss", "masked_l2"]
