"""Masks are data: seeded, batched boolean tensors sampled outside the model (as in I-JEPA).

A mask is bool (B, 1, H, W), True where a pixel is hidden from the encoder. Three shapes, after
Pathak et al. (2016), Sec. 3.3: `center`, `random_block`, `random_region`. They are drawn on the
device that trains (`sample_masks(..., device=...)`, with a generator on that device), and a DDP
rank builds only its rows of the global batch (`rows=`), the masks one process would give them.
"""

from ctxenc.masks.overlap import apply_mask, loss_weights, overlap_border
from ctxenc.masks.shapes import MASKS, center_masks, random_block_masks, random_region_masks, sample_masks

__all__ = [
    "MASKS", "apply_mask", "center_masks", "loss_weights", "overlap_border",
    "random_block_masks", "random_region_masks", "sample_masks",
]
