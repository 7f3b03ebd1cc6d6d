import pytest
import torch

from ctxenc.errors import UserError
from ctxenc.masks import MASKS, apply_mask, loss_weights, overlap_border, sample_masks


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_center_is_a_quarter():
    m = sample_masks("center", 3, 32, gen())
    assert m.shape == (3, 1, 32, 32) and m.dtype == torch.bool
    assert m.float().mean().item() == 0.25
    assert m[0, 0, 8:24, 8:24].all() and not m[0, 0, 7, 8] and not m[0, 0, 24, 8]


def test_random_block_covers_at_most_a_quarter():
    m = sample_masks("random_block", 500, 32, gen())
    ratio = m.float().mean(dim=(1, 2, 3))
    assert ratio.max() <= 0.25 and ratio.min() > 0
    assert len(set(ratio.tolist())) > 10  # sizes and overlaps vary


def test_random_region_fraction_within_20_to_30_percent():
    m = sample_masks("random_region", 500, 32, gen())
    ratio = m.float().mean(dim=(1, 2, 3))
    assert ratio.min() >= 0.2 and ratio.max() <= 0.3
    assert not torch.equal(m[0], m[1])


@pytest.mark.parametrize("kind", list(MASKS))
def test_masks_are_deterministic_by_seed(kind):
    assert torch.equal(sample_masks(kind, 16, 32, gen(7)), sample_masks(kind, 16, 32, gen(7)))
    if kind != "center":
        assert not torch.equal(sample_masks(kind, 16, 32, gen(7)), sample_masks(kind, 16, 32, gen(8)))


def test_impossible_region_ratio_fails_clearly():
    with pytest.raises(UserError, match="could not draw random-region masks"):
        sample_masks("random_region", 4, 32, gen(), min_ratio=0.9, max_ratio=0.95, max_rounds=3)
    with pytest.raises(UserError, match="mask ratios"):
        sample_masks("random_region", 4, 32, gen(), min_ratio=0.5, max_ratio=0.2)


def test_unknown_mask_lists_valid_names():
    with pytest.raises(UserError, match="valid masks: center, random_block, random_region"):
        sample_masks("circle", 1, 32)


def test_overlap_border_by_hand():
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[..., 2:4, 2:4] = True
    border = overlap_border(mask, 1)
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1:5, 1:5] = True
    expected[2:4, 2:4] = False
    assert torch.equal(border[0, 0], expected)  # the 12 pixels around the 2x2 hole
    w = loss_weights(mask, 1, 10.0)
    assert w.sum().item() == 4 * 1 + 12 * 10
    assert not overlap_border(mask, 0).any()


def test_apply_mask_fills_with_mean():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, 0] = True
    out = apply_mask(images, mask, torch.tensor([-1.0, 0.0, 1.0]))
    assert out[0, :, 0, 0].tolist() == [-1.0, 0.0, 1.0]
    assert torch.equal(out[1], images[1]) and torch.equal(out[0, :, 1:], images[0, :, 1:])


def test_center_hole_of_a_given_side():
    m = sample_masks("center", 2, 32, side=14)  # a 16 px square minus a 1 px overlap ring
    assert m[0, 0].sum() == 14 * 14 and m[0, 0, 9:23, 9:23].all() and not m[0, 0, 8, 9]
    with pytest.raises(UserError, match="does not fit centred"):
        sample_masks("center", 1, 32, side=15)
