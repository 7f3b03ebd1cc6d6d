"""`rotation` (Gidaris et al., ICLR 2018): recognise by how much an image was rotated.

Each image is turned by 0, 90, 180 or 270 degrees (counter-clockwise), and a linear head on the
encoder's pooled last stage classifies the rotation (4 ways, cross-entropy). To tell which way
is up the encoder has to find the object and its parts.

Deviations from the paper:
- one rotation per image, drawn at random, where the paper feeds all four rotated copies of each
  image in the same batch: here every pretext sees the same number of images per step;
- the head is one linear layer on the shared encoder's pooled last stage, not the paper's RotNet
  layers, so the encoder itself must make the rotation linearly separable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.pretext.base import Pretext, register_pretext

NUM_ROTATIONS = 4


@dataclass(frozen=True)
class RotationConfig:
    """No options: four rotations, a linear head on the pooled last stage."""


def rotate(images: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """images: (B, C, S, S); rotations: int64 (B,) in 0..3 -> each image turned by rotations[i] x 90
    degrees counter-clockwise, (B, C, S, S)."""
    turned = torch.stack([images.rot90(k, dims=(2, 3)) for k in range(NUM_ROTATIONS)])  # (4, B, C, S, S)
    return turned[rotations, torch.arange(len(images), device=images.device)]


@register_pretext
class Rotation(Pretext):
    """Classify the rotation of an image, 0/90/180/270 degrees (Gidaris et al. 2018)."""

    name = "rotation"
    Config = RotationConfig
    loss_name = "cross_entropy"

    def __init__(self, encoder, cfg: RotationConfig, data):
        super().__init__(encoder, cfg, data)
        self.head = nn.Linear(encoder.num_features, NUM_ROTATIONS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) in [-1, 1] (already rotated) -> rotation logits (B, 4)."""
        return self.head(self.encoder.pooled(x))

    def forward_loss(self, images: torch.Tensor, rotations: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, C, S, S) upright; rotations: int64 (B,) in 0..3 -> loss, logits (B, 4), accuracy."""
        logits = self(rotate(images, rotations))
        loss = F.cross_entropy(logits.float(), rotations)
        return {"loss": loss, "logits": logits, "accuracy": (logits.argmax(1) == rotations).float().mean()}

    def train_step(self, batch, ctx):
        rotations = ctx.draw(lambda n, gen: torch.randint(NUM_ROTATIONS, (n,), generator=gen))
        with ctx.autocast():
            out = self.forward_loss(batch["images"], rotations)
        ctx.update(out["loss"])
        return {"loss": out["loss"].detach(), "accuracy": out["accuracy"].detach()}
