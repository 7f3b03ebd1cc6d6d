"""`context_encoder` (Pathak et al. 2016): fill in hidden pixels from their context.

The autoencoder's network on the masked image (hidden pixels set to the dataset mean), trained
to reconstruct the hidden region, optionally with a discriminator on the predicted content: the
cropped hole + overlap border for the center mask, the completed image for the others. With
`predict: center` the decoder outputs only the central square (the paper's 128 px -> 64 px
inpainting model).

Which pixels the reconstruction loss covers (`loss_region`):
- `hole` (default): the paper's Eq. (1), an L2 over the hidden pixels only; with the `center`
  mask the hole's overlap ring is added at `overlap_weight` (10), as the paper's inpainting
  model (Sec. 3.3/4.1) — the only place the paper uses the ring.
- `image`: the whole image, unweighted, as the released random-region script (train_random.lua).
- `hole+ring`: the hole plus its overlap ring at `overlap_weight` for every mask. Around random
  masks at 32 px the ring holds most of the weight, which makes the task mostly autoencoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ctxenc.errors import UserError
from ctxenc.losses import discriminator_loss, generator_loss, masked_l2
from ctxenc.masks import MASKS, apply_mask, loss_weights, sample_masks
from ctxenc.masks.overlap import LOSS_REGIONS
from ctxenc.pretext.base import Pretext, adam, non_default, register_pretext
from ctxenc.pretext.layers import Discriminator
from ctxenc.pretext.reconstruction_head import ReconstructionHead
from ctxenc.encoders import init_dcgan_weights


@dataclass(frozen=True)
class ContextEncoderConfig:
    """mask: center | random_block | random_region; mask_ratio: the expected hidden fraction
    (center: always 1/4). overlap_px: the border the prediction shares with the context (paper:
    4 px at 128 px; 1 px at 32 px); overlap_weight: its loss weight (paper: 10). loss_region: see
    the module docstring. adversarial: add the GAN loss with weights lambda_rec / lambda_adv
    (paper: 0.999 / 0.001). predict: `image` decodes the whole image; `center` (center mask
    only) just the central size/2 square, whose hidden hole is that square minus its overlap ring.
    """

    mask: str = "random_region"
    mask_ratio: float = 0.25
    overlap_px: int = 1
    overlap_weight: float = 10.0
    loss_region: str = "hole"
    adversarial: bool = False
    lambda_rec: float = 0.999
    lambda_adv: float = 0.001
    predict: str = "image"

    def __post_init__(self):
        if self.mask not in MASKS:
            raise UserError(f"unknown mask {self.mask!r}; valid masks: {', '.join(MASKS)}.")
        if not 0.05 < self.mask_ratio <= 0.5:
            raise UserError(f"mask ratio must lie in (0.05, 0.5], got {self.mask_ratio}.")
        if self.mask == "center" and self.mask_ratio != 0.25:
            raise UserError(f"the center mask always hides 1/4 of the image; drop the mask ratio {self.mask_ratio} or use another mask.")
        if not 0 <= self.overlap_px <= 16:
            raise UserError(f"overlap must be 0-16 pixels, got {self.overlap_px}.")
        if self.overlap_weight < 0:
            raise UserError(f"overlap weight must be non-negative, got {self.overlap_weight}.")
        if self.loss_region not in LOSS_REGIONS:
            raise UserError(f"unknown loss region {self.loss_region!r}; valid: {', '.join(LOSS_REGIONS)}.")
        if self.predict not in ("image", "center"):
            raise UserError(f"unknown prediction target {self.predict!r}; valid: image, center.")
        if self.predict == "center" and self.mask != "center":
            raise UserError("predict: center needs mask: center; use predict: image otherwise.")

    def mask_options(self, size: int) -> dict:
        """Options for `sample_masks(self.mask, n, size, ...)`: the hole shrinks when only the
        centre is decoded; the ratio sets the random masks' expected hidden fraction."""
        if self.predict == "center":
            return {"side": size // 2 - 2 * self.overlap_px}
        if self.mask == "random_block":
            return {"ratio": self.mask_ratio}
        if self.mask == "random_region":
            return {"min_ratio": self.mask_ratio - 0.05, "max_ratio": self.mask_ratio + 0.05}
        return {}

    def judged_side(self, size: int) -> int | None:
        """Side of the square the discriminator judges: the hole plus its overlap border for the
        center mask (size/2 + 2 * overlap_px, or size/2 when only the centre is decoded); None
        (the whole image) for the other masks, whose holes move."""
        if self.mask != "center":
            return None
        return size // 2 if self.predict == "center" else size // 2 + 2 * self.overlap_px

    def loss_weights(self, masks: torch.Tensor) -> torch.Tensor:
        """Per-pixel reconstruction weights (B, 1, S, S) for hidden-pixel masks (B, 1, S, S)."""
        return loss_weights(masks, self.loss_region, self.overlap_px, self.overlap_weight, ring=self.mask == "center")

    @property
    def loss(self) -> str:
        return "l2+adv" if self.adversarial else "l2"


@register_pretext
class ContextEncoder(Pretext):
    """Inpaint masked pixels from their context (Pathak et al. 2016)."""

    name = "context_encoder"
    Config = ContextEncoderConfig

    def __init__(self, encoder, cfg: ContextEncoderConfig, data):
        super().__init__(encoder, cfg, data)
        size = encoder.input_size
        self.head = ReconstructionHead(encoder, size // 2 if cfg.predict == "center" else size)
        self.discriminator = Discriminator(encoder.in_channels, cfg.judged_side(size) or size) if cfg.adversarial else None
        if self.discriminator is not None:
            init_dcgan_weights(self.discriminator)
        # The dataset mean that fills hidden pixels, (C,) in [-1, 1]; saved with the weights.
        self.register_buffer("fill", torch.as_tensor(data.fill, dtype=torch.float32).reshape(-1))

    @classmethod
    def label(cls, cfg: ContextEncoderConfig) -> str:
        """context_encoder/<mask>/<loss>, then every other option off its default."""
        return "/".join([cls.name, cfg.mask, cfg.loss, *non_default(cfg, skip=("mask", "adversarial"))])

    @classmethod
    def descriptors(cls, cfg: ContextEncoderConfig) -> dict[str, str]:
        return {"mask": cfg.mask, "loss": cfg.loss}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) (already masked) -> reconstruction (B, C, S, S) in [-1, 1].

        With predict=center the decoded (B, C, S/2, S/2) square is pasted into the centre of x.
        """
        out = self.head(self.encoder(x))
        if out.shape[-1] == x.shape[-1]:
            return out
        lo = (x.shape[-1] - out.shape[-1]) // 2
        full = x.clone()
        full[..., lo : lo + out.shape[-1], lo : lo + out.shape[-1]] = out
        return full

    def forward_loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, C, S, S) in [-1, 1]; masks: bool (B, 1, S, S), True where hidden.

        Returns the reconstruction loss, the prediction and the completed image (context kept,
        hole filled from the prediction); with a discriminator also `real_view` and `fake_view`,
        what it judges: for the center mask the central square of the hole + overlap border,
        cropped from the images and from the prediction, (B, C, J, J); otherwise the images and
        the completed images.
        """
        prediction = self(apply_mask(images, masks, self.fill))
        completed = torch.where(masks, prediction, images)
        out = {"loss_rec": masked_l2(prediction, images, self.cfg.loss_weights(masks)),
               "prediction": prediction, "completed": completed}
        if self.discriminator is not None:
            side = self.cfg.judged_side(images.shape[-1])
            out["real_view"] = images if side is None else center_crop(images, side)
            out["fake_view"] = completed if side is None else center_crop(prediction, side)
        return out

    def optimizers(self, train):
        """Adam (paper code: beta1 0.5); the discriminator learns 10x slower (paper, Sec. 3.2)."""
        generator = [p for name, p in self.named_parameters() if not name.startswith("discriminator.")]
        opts = {"generator": adam(generator, train.lr, train.beta1)}
        if self.discriminator is not None:
            opts["discriminator"] = adam(self.discriminator.parameters(), train.lr / 10, train.beta1)
        return opts

    def train_step(self, batch, ctx):
        images = batch["images"]
        size = images.shape[-1]
        masks = ctx.draw_on_device(lambda n, gen, **where: sample_masks(self.cfg.mask, n, size, gen, **where,
                                                                         **self.cfg.mask_options(size)))
        with ctx.autocast():
            out = self.forward_loss(images, masks)
        metrics = {"loss_rec": out["loss_rec"].detach()}
        loss = out["loss_rec"]
        if self.discriminator is not None:
            # Discriminator step on real vs predicted content (generator frozen) ...
            with ctx.autocast():
                loss_d = discriminator_loss(self.discriminator(out["real_view"]), self.discriminator(out["fake_view"].detach()))
            ctx.update(loss_d, "discriminator", what="discriminator loss")
            # ... then the generator's joint loss against the updated discriminator.
            with ctx.autocast():
                loss_adv = generator_loss(self.discriminator(out["fake_view"]))
            loss = self.cfg.lambda_rec * out["loss_rec"] + self.cfg.lambda_adv * loss_adv
            metrics.update(loss_d=loss_d.detach(), loss_adv=loss_adv.detach())
        ctx.update(loss, "generator")
        return metrics


def center_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, S, S) -> the central (B, C, side, side)."""
    lo = (x.shape[-1] - side) // 2
    return x[..., lo : lo + side, lo : lo + side]
