"""What a pretext method is, as data: stored in every checkpoint so it can be rebuilt."""

from __future__ import annotations

from dataclasses import dataclass

from ctxenc.errors import UserError

PRETEXTS = ("random", "autoencoder", "context_encoder")


@dataclass(frozen=True)
class PretextConfig:
    """name: one of PRETEXTS. The mask options matter only for `context_encoder`.

    mask_ratio: hidden fraction: exactly 1/4 for `center`, the most for `random_block`, the
    middle of a +-5% range for `random_region` (paper: 20-30%).
    overlap_px: border the prediction shares with the context (paper: 4 px at 128 px; we scale
    it to the image, 1 px at 32 px); overlap_weight: its loss weight (paper: 10).
    adversarial: add the GAN loss with weights lambda_rec / lambda_adv (paper: 0.999 / 0.001);
    with the center mask the discriminator judges the predicted region (hole + overlap border,
    cropped), otherwise the completed image.
    predict: `image` decodes the whole image (the loss still covers only hole + border);
    `center` (center mask only) decodes just the central size/2 square, as the paper's inpainting
    model does (128 px in, 64 px out): the hidden hole is then that square minus its overlap ring.
    """

    name: str = "context_encoder"
    mask: str = "random_region"
    mask_ratio: float = 0.25
    overlap_px: int = 1
    overlap_weight: float = 10.0
    adversarial: bool = False
    lambda_rec: float = 0.999
    lambda_adv: float = 0.001
    predict: str = "image"

    def __post_init__(self):
        from ctxenc.masks import MASKS

        if self.name not in PRETEXTS:
            raise UserError(f"unknown pretext {self.name!r}; valid pretexts: {', '.join(PRETEXTS)}.")
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
        if self.predict not in ("image", "center"):
            raise UserError(f"unknown prediction target {self.predict!r}; valid: image, center.")
        if self.predict == "center" and (self.name != "context_encoder" or self.mask != "center"):
            raise UserError("predict: center needs name: context_encoder and mask: center; use predict: image otherwise.")
        if self.adversarial and self.name != "context_encoder":
            raise UserError(f"--adversarial applies to context_encoder only, not {self.name}.")

    def mask_options(self, size: int) -> dict:
        """Options for `sample_masks(self.mask, n, size, ...)`: the hole shrinks when only the
        centre is decoded; the ratio bounds random blocks and centres random regions' range."""
        if self.predict == "center":
            return {"side": size // 2 - 2 * self.overlap_px}
        if self.mask == "random_block":
            return {"max_ratio": self.mask_ratio}
        if self.mask == "random_region":
            return {"min_ratio": self.mask_ratio - 0.05, "max_ratio": self.mask_ratio + 0.05}
        return {}

    def judged_side(self, size: int) -> int | None:
        """Side of the square the discriminator judges: the hole plus its overlap border for the
        center mask (size/2 + 2 * overlap_px, or size/2 when only the centre is decoded); None
        (the whole image) for the other masks, whose holes move."""
        if self.mask != "center" or not self.uses_masks:
            return None
        return size // 2 if self.predict == "center" else size // 2 + 2 * self.overlap_px

    @property
    def uses_masks(self) -> bool:
        return self.name == "context_encoder"

    @property
    def loss(self) -> str:
        """The loss as tables name it: l2, l2+adv, or none."""
        if self.name == "random":
            return "none"
        return "l2+adv" if self.adversarial else "l2"

    @property
    def mask_label(self) -> str:
        """The mask as tables name it ('none' where the method uses no mask)."""
        return self.mask if self.uses_masks else "none"
