"""The three mask shapes of the paper, sampled for a whole batch at once, on the device that trains.

Every sampler draws its random numbers for all `n` masks of the batch from `generator`, on
`device`, and then builds only the masks `rows` asks for (default: all). A DDP rank passes its
slice of the global batch: the generator moves on exactly as in one process, and the rank's masks
are those one process would build for the same rows (tests/test_masks.py checks this on the CPU).

The same seed gives the same masks on a device type; CPU and CUDA generators are different
streams (CUDA's is Philox), so a CUDA run does not reproduce a CPU run's masks bit for bit.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ctxenc.errors import UserError

# On the CPU masks are built in groups of about this many pixels, so a group's float field (4 MB)
# stays in cache: measured 1.5x faster at 227 px, batches of 64, than the whole batch at once.
CPU_GROUP_PIXELS = 2**20


def center_masks(n: int, size: int, generator: torch.Generator | None = None, side: int | None = None, *,
                 device: torch.device | str | None = None, rows: slice | None = None) -> torch.Tensor:
    """The central square of side `side` (default size/2: exactly 1/4 of the area). -> bool (n, 1, size, size).

    A smaller side is the released code's hole for a model that predicts only the central
    size/2 square: that square minus its overlap ring (56 px of 64 at 128 px).
    """
    if size < 2 or size % 2:
        raise UserError(f"a center mask needs an even image size of at least 2 pixels, got {size}.")
    side = size // 2 if side is None else side
    if not 0 < side <= size or (size - side) % 2:
        raise UserError(f"a center hole of {side} px does not fit centred in a {size} px image.")
    count = len(range(n)[rows or slice(None)])
    mask = torch.zeros(count, 1, size, size, dtype=torch.bool, device=draw_device(generator, device))
    lo = (size - side) // 2
    mask[..., lo : lo + side, lo : lo + side] = True
    return mask


def random_block_masks(n: int, size: int, generator: torch.Generator | None = None,
                       num_blocks: int = 4, ratio: float = 0.25, max_blocks: int = 16, *,
                       device: torch.device | str | None = None, rows: slice | None = None) -> torch.Tensor:
    """Squares at random places, possibly overlapping, added until they hide about `ratio` of the image.

    Each side is drawn from [side_max/2, side_max] with side_max^2 * num_blocks = ratio * size^2 (so
    about `num_blocks` blocks are needed). Blocks are added one at a time; a mask stops at the block
    count whose hidden fraction is closest to `ratio` (the first count that reaches it, or the one
    before), so the expected hidden fraction is `ratio`, as for the other shapes (matched
    difficulty), not the ~14% that a fixed count of overlapping blocks hides.
    -> bool (n, 1, size, size), or the masks `rows` of them.
    """
    if not 0 < ratio < 1:
        raise UserError(f"mask ratio must lie in (0, 1), got {ratio}.")
    side_max = int((ratio * size * size / num_blocks) ** 0.5)
    if side_max < 1:
        raise UserError(f"a {size}x{size} image is too small for {num_blocks} blocks covering {ratio:.0%}.")
    device = draw_device(generator, device)
    rows = rows or slice(None)
    sides = torch.randint(max(1, side_max // 2), side_max + 1, (max_blocks, n, 1, 1), generator=generator, device=device)
    # Top-left corners drawn uniformly in [0, size - side]: a uniform in [0, 1) scaled per block.
    u = torch.rand(max_blocks, n, 2, generator=generator, device=device)
    tops = (u[..., 0:1, None] * (size - sides + 1)).long()
    lefts = (u[..., 1:2, None] * (size - sides + 1)).long()
    sides, tops, lefts = (t.view(max_blocks, n).T[rows] for t in (sides, tops, lefts))  # (m, max_blocks)

    hidden = union_areas(tops, lefts, sides).float() / (size * size)  # (m, max_blocks): after 1, 2, ... blocks
    before = F.pad(hidden[:, :-1], (1, 0))
    # The first count that reaches the ratio (hidden fractions only grow), kept unless it
    # overshoots by more than the count before fell short; all blocks if none reaches it.
    reached = (hidden < ratio).sum(1, keepdim=True)  # (m, 1) index of the first block that reaches it
    at = reached.clamp(max=max_blocks - 1)
    closer = (hidden.gather(1, at) - ratio <= ratio - before.gather(1, at)) | (reached == 0)
    count = torch.where(reached == max_blocks, max_blocks, reached + closer.long())  # (m, 1) blocks kept
    kept = torch.arange(max_blocks, device=device) < count  # (m, max_blocks)

    pixels = torch.arange(size, device=device)

    def build(group: slice) -> torch.Tensor:
        def spans(start: torch.Tensor) -> torch.Tensor:  # (g, max_blocks, size): pixels each kept block covers
            start, side = start[group, :, None], sides[group, :, None]
            return ((pixels >= start) & (pixels < start + side) & kept[group, :, None]).float()
        # A kept block covers a pixel when it spans the pixel's row and its column: the product
        # counts the blocks over each pixel, (g, size, size), exact integers in float.
        return spans(tops).transpose(1, 2) @ spans(lefts) > 0

    return in_groups(len(sides), size, device, build).unsqueeze(1)


def union_areas(tops: torch.Tensor, lefts: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    """Pixels hidden by the first 1, 2, ..., B squares: tops, lefts, sides (m, B) long -> (m, B) long.

    Computed on the grid the squares' edges cut the image into: every cell of it is inside a square
    or outside it whole, so each mask needs (2B - 1)^2 cells instead of size^2 pixels.
    """
    m, blocks = sides.shape
    ys = torch.cat([tops, tops + sides], 1).sort(1).values  # (m, 2B) row edges
    xs = torch.cat([lefts, lefts + sides], 1).sort(1).values

    def inside(start: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:  # (m, B, 2B-1): strip in square
        lo = edges[:, None, :-1]
        return (start[:, :, None] <= lo) & (lo < (start + sides)[:, :, None])

    in_rows, in_cols = inside(tops, ys), inside(lefts, xs)
    cell = ys.diff(dim=1)[:, :, None] * xs.diff(dim=1)[:, None, :]  # (m, 2B-1, 2B-1) cell areas
    covered = torch.zeros_like(cell, dtype=torch.bool)
    areas = []
    for b in range(blocks):  # one square at a time, for all masks at once
        covered |= in_rows[:, b, :, None] & in_cols[:, b, None, :]
        areas.append((cell * covered).sum((1, 2)))
    return torch.stack(areas, 1)


def random_region_masks(n: int, size: int, generator: torch.Generator | None = None,
                        noise_cells: int = 6, min_ratio: float = 0.2, max_ratio: float = 0.3, *,
                        device: torch.device | str | None = None, rows: slice | None = None) -> torch.Tensor:
    """Arbitrary blob shapes: the low values of a smooth random field.

    A uniform-noise field of `noise_cells`^2 cells is upsampled bicubically to the image size and
    thresholded, as in the released code. The released code thresholds at 0.25 and redraws until
    the hidden fraction lies in [min_ratio, max_ratio], which skews the fractions low (a mean of
    ~0.236 for [0.2, 0.3]); here each mask draws its fraction uniformly from [min_ratio, max_ratio]
    and thresholds its field at that quantile, so the expected hidden fraction is exactly the
    middle of the range (matched difficulty with the other shapes), with no redraws.
    -> bool (n, 1, size, size), or the masks `rows` of them.
    """
    if not 0 < min_ratio <= max_ratio < 1:
        raise UserError(f"mask ratios must satisfy 0 < min <= max < 1, got [{min_ratio}, {max_ratio}].")
    device = draw_device(generator, device)
    rows = rows or slice(None)
    noise = torch.rand(n, 1, noise_cells, noise_cells, generator=generator, device=device)[rows, 0]
    ratio = min_ratio + (max_ratio - min_ratio) * torch.rand(n, generator=generator, device=device)[rows]
    hidden = (ratio * size * size).round().long().clamp(1, size * size)  # (m,) pixels to hide per mask
    up = bicubic_matrix(noise_cells, size, device)  # (size, cells)

    def build(group: slice) -> torch.Tensor:
        # Bicubic upsampling is separable: up @ noise @ up^T equals F.interpolate(..., "bicubic")
        # up to float rounding, and costs two small matrix products.
        field = up @ (noise[group] @ up.T)  # (g, size, size)
        threshold = kth_smallest(field.flatten(1), hidden[group])  # the hidden-th smallest value
        return field <= threshold.view(-1, 1, 1)

    return in_groups(len(noise), size, device, build).unsqueeze(1)


def bicubic_matrix(cells: int, size: int, device: torch.device) -> torch.Tensor:
    """(size, cells): row y holds the weights bicubic upsampling gives the cells at pixel y, as
    F.interpolate(mode="bicubic", align_corners=False) does: Keys' cubic with a = -0.75 on the
    4 nearest cells, border cells repeated. Built with torch ops on `device`."""
    src = (torch.arange(size, device=device) + 0.5) * (cells / size) - 0.5  # pixel centres in cell units
    base = src.floor()
    offsets = torch.arange(-1, 3, device=device)  # the 4 taps around each pixel
    d = (src - base)[:, None] - offsets  # (size, 4) distances to the taps
    a, d = -0.75, d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    taps = (base.long()[:, None] + offsets).clamp(0, cells - 1)
    weights = torch.where(d <= 1, near, far)
    return torch.zeros(size, cells, device=device).scatter_add_(1, taps, weights)


def kth_smallest(values: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The k-th smallest value of each row, exactly: values (m, N) float, k (m,) long in [1, N] -> (m,).

    Off the CPU (CUDA) a full sort, which is fast there and needs no host sync. On the CPU a sort of
    51,529 values per mask (227 px) cost 3.8 ms; numpy's introselect finds one order statistic in
    linear time (measured 13x faster), but takes one k for all rows. So each row is padded to make
    its own k-th value the largest k's: K - k copies of -inf and the rest of the padding +inf.
    """
    if values.device.type != "cpu":
        return values.sort(dim=1).values.gather(1, k.view(-1, 1) - 1).squeeze(1)
    k_min, k_max = int(k.min()), int(k.max())
    below = torch.arange(k_max - k_min) < (k_max - k).view(-1, 1)  # (m, K - k_min)
    padded = torch.cat([values, torch.where(below, -torch.inf, torch.inf).to(values.dtype)], 1).numpy()
    padded.partition(k_max - 1, axis=1)
    return torch.from_numpy(padded[:, k_max - 1].copy())


def in_groups(count: int, size: int, device: torch.device, build: Callable[[slice], torch.Tensor]) -> torch.Tensor:
    """build(group) -> bool (g, size, size) for `count` masks: in groups of about CPU_GROUP_PIXELS
    on the CPU, in one batch on other devices. -> bool (count, size, size)."""
    group = max(1, CPU_GROUP_PIXELS // (size * size)) if device.type == "cpu" else max(1, count)
    parts = [build(slice(lo, lo + group)) for lo in range(0, count, group)]
    if not parts:
        return torch.zeros(0, size, size, dtype=torch.bool, device=device)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def draw_device(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device:
    """Where masks are drawn: `device`, else the generator's, else the CPU. A generator draws only
    on its own device type (a CUDA generator for CUDA masks)."""
    if device is None:
        return generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"a generator on {generator.device} cannot draw masks on {device}; create it on {device.type}.")
    return device


MASKS = {"center": center_masks, "random_block": random_block_masks, "random_region": random_region_masks}


def sample_masks(kind: str, n: int, size: int, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, rows: slice | None = None, **options) -> torch.Tensor:
    """Sample n masks of shape `kind` for size x size images. -> bool (n, 1, size, size) on `device`
    (default: the generator's device, else the CPU).

    `rows` (a slice of range(n)) builds only those masks: the result equals
    `sample_masks(kind, n, size, ...)[rows]` and advances the generator the same way, which lets
    each DDP rank build its slice of the global batch alone. The same seed gives the same masks
    on one device type; a CUDA generator's stream is not the CPU's.
    """
    if kind not in MASKS:
        raise UserError(f"unknown mask {kind!r}; valid masks: {', '.join(MASKS)}.")
    return MASKS[kind](n, size, generator, device=device, rows=rows, **options)
