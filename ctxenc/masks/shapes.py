"""The three mask shapes of the paper, sampled for a whole batch at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctxenc.errors import UserError


def center_masks(n: int, size: int, generator: torch.Generator | None = None, side: int | None = None) -> torch.Tensor:
    """The central square of side `side` (default size/2: exactly 1/4 of the area). -> bool (n, 1, size, size).

    A smaller side is the released code's hole for a model that predicts only the central
    size/2 square: that square minus its overlap ring (56 px of 64 at 128 px).
    """
    if size < 2 or size % 2:
        raise UserError(f"a center mask needs an even image size of at least 2 pixels, got {size}.")
    side = size // 2 if side is None else side
    if not 0 < side <= size or (size - side) % 2:
        raise UserError(f"a center hole of {side} px does not fit centred in a {size} px image.")
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    lo = (size - side) // 2
    mask[..., lo : lo + side, lo : lo + side] = True
    return mask


def random_block_masks(n: int, size: int, generator: torch.Generator | None = None,
                       num_blocks: int = 4, max_ratio: float = 0.25) -> torch.Tensor:
    """`num_blocks` squares at random places, possibly overlapping.

    Each side is drawn from [side_max/2, side_max] with side_max^2 * num_blocks <= max_ratio *
    size^2, so the blocks cover at most `max_ratio` of the image in all (less where they overlap).
    """
    if not 0 < max_ratio <= 1:
        raise UserError(f"mask ratio must lie in (0, 1], got {max_ratio}.")
    side_max = int((max_ratio * size * size / num_blocks) ** 0.5)
    if side_max < 1:
        raise UserError(f"a {size}x{size} image is too small for {num_blocks} blocks covering at most {max_ratio:.0%}.")
    sides = torch.randint(max(1, side_max // 2), side_max + 1, (n, num_blocks, 1, 1), generator=generator)
    # Top-left corners drawn uniformly in [0, size - side]: a uniform in [0, 1) scaled per block.
    u = torch.rand(n, num_blocks, 2, generator=generator)
    tops = (u[..., 0:1, None] * (size - sides + 1)).long()
    lefts = (u[..., 1:2, None] * (size - sides + 1)).long()
    rows = torch.arange(size).view(1, 1, size, 1)
    cols = torch.arange(size).view(1, 1, 1, size)
    inside = (rows >= tops) & (rows < tops + sides) & (cols >= lefts) & (cols < lefts + sides)
    return inside.any(dim=1, keepdim=True)


def random_region_masks(n: int, size: int, generator: torch.Generator | None = None,
                        noise_cells: int = 6, threshold: float = 0.25,
                        min_ratio: float = 0.2, max_ratio: float = 0.3, max_rounds: int = 100) -> torch.Tensor:
    """Arbitrary blob shapes, as the released code made them.

    A uniform-noise field of `noise_cells`^2 cells is upsampled bicubically to the image size and
    thresholded at `threshold`; as in the original, fields are redrawn until the hidden fraction
    lies in [min_ratio, max_ratio]. Candidates are drawn in batches, so there is no per-sample
    Python; an impossible range fails after `max_rounds` batches instead of looping forever.
    """
    if not 0 <= min_ratio < max_ratio <= 1:
        raise UserError(f"mask ratios must satisfy 0 <= min < max <= 1, got [{min_ratio}, {max_ratio}].")
    kept: list[torch.Tensor] = []
    have = 0
    for _ in range(max_rounds):
        noise = torch.rand(2 * n + 8, 1, noise_cells, noise_cells, generator=generator)
        field = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
        masks = field < threshold
        ratio = masks.float().mean(dim=(1, 2, 3))
        good = masks[(ratio >= min_ratio) & (ratio <= max_ratio)]
        kept.append(good)
        have += len(good)
        if have >= n:
            return torch.cat(kept)[:n]
    raise UserError(
        f"could not draw random-region masks hiding {min_ratio:.0%}-{max_ratio:.0%} of a {size}x{size} image "
        f"with threshold {threshold}; widen the ratio range or change the threshold."
    )


MASKS = {"center": center_masks, "random_block": random_block_masks, "random_region": random_region_masks}


def sample_masks(kind: str, n: int, size: int, generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """Sample n masks of shape `kind` for size x size images. -> bool (n, 1, size, size)."""
    if kind not in MASKS:
        raise UserError(f"unknown mask {kind!r}; valid masks: {', '.join(MASKS)}.")
    return MASKS[kind](n, size, generator, **options)
