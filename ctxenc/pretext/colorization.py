"""`colorization` (Zhang et al., ECCV 2016): predict an image's colours from its grey version.

The encoder sees only the luma of each image, Y' = 0.299 R + 0.587 G + 0.114 B (Rec. 601, on
the [-1, 1] inputs), replicated to its 3 input channels so that the same encoder later takes
colour images. The context encoder's decoder (`ReconstructionHead`) predicts the colour image
as the grey image plus a chroma residual: prediction = grey + 2 * head output, the head's Tanh
range doubled because a colour can lie up to 1.77 from its luma (pure blue). The loss is an L2
over RGB in [-1, 1]. Since the luma is handed over through the residual, the loss asks only
for colour, not for the encoder to reproduce the grey image (which would make it an autoencoder).

Deviations from the paper:
- an L2 regression of colour, not the paper's classification over 313 quantised ab bins of CIE
  Lab with class rebalancing: the paper's own L2 baseline (on ab) gives greyish, desaturated
  colours, which matters for pictures more than for the features this benchmark measures;
- RGB with Rec. 601 luma instead of CIE Lab's L and ab, so no colour-space conversion;
- the context encoder's encoder-decoder, not the paper's VGG-style network with dilated convolutions;
- the paper's network takes the L channel alone (a one-channel first layer); here the first layer
  takes 3 channels so evaluators can feed colour images, and since pretraining gives the 3
  channels the same values, its weights on colour differences stay as initialised.
Images with other than 3 channels (Fashion-MNIST) are refused: there is no colour to predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ctxenc.errors import UserError
from ctxenc.pretext.base import Pretext, register_pretext
from ctxenc.pretext.reconstruction_head import ReconstructionHead

LUMA = (0.299, 0.587, 0.114)  # Rec. 601 weights of R, G, B
CHROMA_SCALE = 2.0  # covers the largest |colour - luma| of an RGB colour in [-1, 1], 1.772 (blue)


@dataclass(frozen=True)
class ColorizationConfig:
    """No options: grey in, colour out, an L2 over RGB."""


def luma(images: torch.Tensor) -> torch.Tensor:
    """images: (B, 3, H, W) RGB in [-1, 1] -> the Rec. 601 luma, replicated, (B, 3, H, W) in [-1, 1]."""
    # Weighted channels summed with Python floats, not a weight tensor, which would be copied from
    # the host at every step.
    r, g, b = images.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1).expand_as(images)


@register_pretext
class Colorization(Pretext):
    """Predict an image's colours from its grey version (Zhang et al. 2016; L2 regression, RGB images only)."""

    name = "colorization"
    Config = ColorizationConfig
    loss_name = "l2"

    def __init__(self, encoder, cfg: ColorizationConfig, data):
        super().__init__(encoder, cfg, data)
        if encoder.in_channels != 3:
            raise UserError(f"colorization needs colour (RGB) images, but these have {encoder.in_channels} "
                            f"channel{'s' if encoder.in_channels != 1 else ''}; choose another pretext or an RGB dataset.")
        self.head = ReconstructionHead(encoder, encoder.input_size)

    def forward(self, grey: torch.Tensor) -> torch.Tensor:
        """grey: (B, 3, S, S) luma replicated, in [-1, 1] -> predicted colour image (B, 3, S, S),
        about [-1, 1] (not clamped: the loss pulls it there)."""
        return grey + CHROMA_SCALE * self.head(self.encoder(grey))

    def forward_loss(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, 3, S, S) RGB in [-1, 1] -> the L2 loss, the grey input and the prediction."""
        grey = luma(images)
        prediction = self(grey)
        loss = F.mse_loss(prediction.float(), images.float())
        return {"loss": loss, "grey": grey, "prediction": prediction}

    def train_step(self, batch, ctx):
        with ctx.autocast():
            loss = self.forward_loss(batch["images"])["loss"]
        ctx.update(loss)
        return {"loss": loss.detach()}
