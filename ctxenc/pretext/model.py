"""Pretext models: the encoder plus what it is trained through; each model owns its loss.

- `random`: the encoder alone, Gaussian init N(0, 0.02), never trained.
- `autoencoder`: encoder -> channel-wise FC -> 1x1 conv -> decoder on the unmasked image,
  reconstructing every pixel.
- `context_encoder`: the same network on the masked image (hidden pixels set to the dataset
  mean), reconstructing the hole and its overlap border (weighted), optionally with a
  discriminator on the predicted content: the cropped hole + overlap border for the center
  mask, the completed image for the others. With `predict: center` the decoder outputs only the
  central square (the paper's 128 px -> 64 px inpainting model).
"""

from __future__ import annotations

import torch
from torch import nn

from ctxenc.encoders import Encoder, init_dcgan_weights
from ctxenc.losses import masked_l2
from ctxenc.masks import apply_mask, loss_weights
from ctxenc.pretext.config import PretextConfig
from ctxenc.pretext.layers import ChannelwiseFC, Discriminator, UpConvDecoder


class RandomInit(nn.Module):
    """The baseline: an encoder with its N(0, 0.02) initialisation and nothing else."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder
        self.discriminator = None


class InpaintingModel(nn.Module):
    """Autoencoder (no masks) or context encoder (masks), sharing one architecture."""

    def __init__(self, encoder: Encoder, cfg: PretextConfig, fill: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        c, n, _ = encoder.feature_shapes()[encoder.stage_names[-1]]
        self.channelwise_fc = ChannelwiseFC(c, n)
        self.mix = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(True))
        size = encoder.input_size
        self.decoder = UpConvDecoder(c, n, encoder.in_channels, size // 2 if cfg.predict == "center" else size)
        judged = cfg.judged_side(size) or size
        self.discriminator = Discriminator(encoder.in_channels, judged) if cfg.adversarial else None
        init_dcgan_weights(self.channelwise_fc)
        init_dcgan_weights(self.mix)
        init_dcgan_weights(self.decoder)
        if self.discriminator is not None:
            init_dcgan_weights(self.discriminator)
        # The dataset mean that fills hidden pixels, (C,) in [-1, 1]; saved with the weights.
        self.register_buffer("fill", torch.as_tensor(fill, dtype=torch.float32).reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) (already masked) -> reconstruction (B, C, S, S) in [-1, 1].

        With predict=center the decoded (B, C, S/2, S/2) square is pasted into the centre of x.
        """
        out = self.decoder(self.mix(self.channelwise_fc(self.encoder(x))))
        if out.shape[-1] == x.shape[-1]:
            return out
        lo = (x.shape[-1] - out.shape[-1]) // 2
        full = x.clone()
        full[..., lo : lo + out.shape[-1], lo : lo + out.shape[-1]] = out
        return full

    def forward_loss(self, images: torch.Tensor, masks: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """images: (B, C, S, S) in [-1, 1]; masks: bool (B, 1, S, S) or None for an autoencoder.

        Returns the reconstruction loss, the prediction and the completed image (context kept,
        hole filled from the prediction); with a discriminator also `real_view` and `fake_view`,
        what it judges: for the center mask the central square of the hole + overlap border,
        cropped from the images and from the prediction, (B, C, J, J); otherwise the images and
        the completed images.
        """
        if masks is None:
            prediction = self(images)
            weights = torch.ones_like(images[:, :1])
            completed = prediction
        else:
            prediction = self(apply_mask(images, masks, self.fill))
            weights = loss_weights(masks, self.cfg.overlap_px, self.cfg.overlap_weight)
            completed = torch.where(masks, prediction, images)
        out = {"loss_rec": masked_l2(prediction, images, weights), "prediction": prediction, "completed": completed}
        if self.discriminator is not None:
            side = self.cfg.judged_side(images.shape[-1])
            out["real_view"] = images if side is None else center_crop(images, side)
            out["fake_view"] = completed if side is None else center_crop(prediction, side)
        return out

    def generator_parameters(self):
        """Everything but the discriminator."""
        return [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]


def center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, S, S) -> the central (B, C, side, side)."""
    lo = (x.shape[-1] - side) // 2
    return x[..., lo : lo + side, lo : lo + side]


def build_pretext(cfg: PretextConfig, encoder: Encoder, fill: torch.Tensor) -> nn.Module:
    """The pretext model for `cfg` around `encoder` (the registry of pretext methods)."""
    if cfg.name == "random":
        return RandomInit(encoder)
    return InpaintingModel(encoder, cfg, fill)
