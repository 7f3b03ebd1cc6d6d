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
                       num_blocks: int = 4, ratio: float = 0.25, max_blocks: int = 16) -> torch.Tensor:
    """Squares at random places, possibly overlapping, added until they hide about `ratio` of the image.

    Each side is drawn from [side_max/2, side_max] with side_max^2 * num_blocks = ratio * size^2 (so
    about `num_blocks` blocks are needed). Blocks are added one at a time to every mask at once; a
    mask stops at the block count whose hidden fraction is closest to `ratio` (the first count that
    reaches it, or the one before), so the expected hidden fraction is `ratio`, as for the other
    shapes (matched difficulty), not the ~14% that a fixed count of overlapping blocks hides.
    """
    if not 0 < ratio < 1:
        raise UserError(f"mask ratio must lie in (0, 1), got {ratio}.")
    side_max = int((ratio * size * size / num_blocks) ** 0.5)
    if side_max < 1:
        raise UserError(f"a {size}x{size} image is too small for {num_blocks} blocks covering {ratio:.0%}.")
    sides = torch.randint(max(1, side_max // 2), side_max + 1, (max_blocks, n, 1, 1), generator=generator)
    # Top-left corners drawn uniformly in [0, size - side]: a uniform in [0, 1) scaled per block.
    u = torch.rand(max_blocks, n, 2, generator=generator)
    tops = (u[..., 0:1, None] * (size - sides + 1)).long()
    lefts = (u[..., 1:2, None] * (size - sides + 1)).long()
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    done = torch.zeros(n, dtype=torch.bool)
    for b in range(max_blocks):  # a loop over blocks, each step batched over all masks
        block = (rows >= tops[b]) & (rows < tops[b] + sides[b]) & (cols >= lefts[b]) & (cols < lefts[b] + sides[b])
        grown = masks | block
        before, after = masks.float().mean(dim=(1, 2)), grown.float().mean(dim=(1, 2))
        # Keep the block unless the mask already reached the target, or it overshoots by more than it was short.
        keep = ~done & ((after < ratio) | (after - ratio <= ratio - before) | (b == 0))
        masks = torch.where(keep.view(n, 1, 1), grown, masks)
        done |= after >= ratio
        if done.all():
            break
    return masks.unsqueeze(1)


def random_region_masks(n: int, size: int, generator: torch.Generator | None = None,
                        noise_cells: int = 6, min_ratio: float = 0.2, max_ratio: float = 0.3) -> torch.Tensor:
    """Arbitrary blob shapes: the low values of a smooth random field.

    A uniform-noise field of `noise_cells`^2 cells is upsampled bicubically to the image size and
    thresholded, as in the released code. The released code thresholds at 0.25 and redraws until
    the hidden fraction lies in [min_ratio, max_ratio], which skews the fractions low (a mean of
    ~0.236 for [0.2, 0.3]); here each mask draws its fraction uniformly from [min_ratio, max_ratio]
    and thresholds its field at that quantile, so the expected hidden fraction is exactly the
    middle of the range (matched difficulty with the other shapes), with no redraws.
    """
    if not 0 < min_ratio <= max_ratio < 1:
        raise UserError(f"mask ratios must satisfy 0 < min <= max < 1, got [{min_ratio}, {max_ratio}].")
    noise = torch.rand(n, 1, noise_cells, noise_cells, generator=generator)
    field = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False).flatten(1)  # (n, S*S)
    ratio = min_ratio + (max_ratio - min_ratio) * torch.rand(n, generator=generator)
    hidden = (ratio * size * size).round().long().clamp(1, size * size)  # pixels to hide per mask
    threshold = field.sort(dim=1).values.gather(1, hidden.view(n, 1) - 1)  # the hidden-th smallest value
    return (field <= threshold).view(n, 1, size, size)


MASKS = {"center": center_masks, "random_block": random_block_masks, "random_region": random_region_masks}


def sample_masks(kind: str, n: int, size: int, generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """Sample n masks of shape `kind` for size x size images. -> bool (n, 1, size, size)."""
    if kind not in MASKS:
        raise UserError(f"unknown mask {kind!r}; valid masks: {', '.join(MASKS)}.")
    return MASKS[kind](n, size, generator, **options)
