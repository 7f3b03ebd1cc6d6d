"""`autoencoder`: the paper's baseline (Table 2), the context encoder's network on the whole,
unmasked image, reconstructing every pixel with an unweighted L2."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctxenc.losses import masked_l2
from ctxenc.pretext.base import Pretext, register_pretext
from ctxenc.pretext.reconstruction_head import ReconstructionHead


@dataclass(frozen=True)
class AutoencoderConfig:
    """No options: the same encoder-decoder as the context encoder, without masks."""


@register_pretext
class Autoencoder(Pretext):
    """Reconstruct the whole unmasked image (the paper's baseline)."""

    name = "autoencoder"
    Config = AutoencoderConfig
    loss_name = "l2"

    def __init__(self, encoder, cfg: AutoencoderConfig, data):
        super().__init__(encoder, cfg, data)
        self.head = ReconstructionHead(encoder, encoder.input_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) in [-1, 1] -> reconstruction (B, C, S, S) in [-1, 1]."""
        return self.head(self.encoder(x))

    def train_step(self, batch, ctx):
        images = batch["images"]
        with ctx.autocast():
            loss = masked_l2(self(images), images, torch.ones_like(images[:, :1]))
        ctx.update(loss)
        return {"loss_rec": loss.detach()}
