import pytest
import torch

from ctxenc.errors import UserError
from ctxenc.masks import MASKS, apply_mask, loss_weights, overlap_border, sample_masks
from ctxenc.masks.overlap import LOSS_REGIONS


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_center_is_a_quarter():
    m = sample_masks("center", 3, 32, gen())
    assert m.shape == (3, 1, 32, 32) and m.dtype == torch.bool
    assert m.float().mean().item() == 0.25
    assert m[0, 0, 8:24, 8:24].all() and not m[0, 0, 7, 8] and not m[0, 0, 24, 8]


@pytest.mark.parametrize("kind", list(MASKS))
def test_every_mask_hides_a_quarter_on_average(kind):
    # Matched difficulty: 1,000 masks of each shape hide 25% +- 2 points on average.
    ratio = sample_masks(kind, 1000, 32, gen()).float().mean(dim=(1, 2, 3))
    assert abs(ratio.mean().item() - 0.25) <= 0.02, kind


def test_random_block_follows_its_ratio_and_varies():
    ratio = sample_masks("random_block", 500, 32, gen(), ratio=0.1).float().mean(dim=(1, 2, 3))
    assert abs(ratio.mean().item() - 0.1) <= 0.01 and ratio.min() > 0
    assert len(set(ratio.tolist())) > 10  # sizes and overlaps vary


def test_random_region_fraction_within_its_range():
    m = sample_masks("random_region", 500, 32, gen())
    ratio = m.float().mean(dim=(1, 2, 3))
    assert ratio.min() >= 0.2 - 1 / 1024 and ratio.max() <= 0.3 + 1 / 1024
    assert not torch.equal(m[0], m[1])


@pytest.mark.parametrize("kind", list(MASKS))
def test_masks_are_deterministic_by_seed(kind):
    assert torch.equal(sample_masks(kind, 16, 32, gen(7)), sample_masks(kind, 16, 32, gen(7)))
    if kind != "center":
        assert not torch.equal(sample_masks(kind, 16, 32, gen(7)), sample_masks(kind, 16, 32, gen(8)))


def test_bad_ratios_fail_clearly():
    with pytest.raises(UserError, match="mask ratios"):
        sample_masks("random_region", 4, 32, gen(), min_ratio=0.5, max_ratio=0.2)
    with pytest.raises(UserError, match="mask ratio must lie"):
        sample_masks("random_block", 4, 32, gen(), ratio=1.5)


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
    assert loss_weights(mask, "hole+ring", 1, 10.0).sum().item() == 4 * 1 + 12 * 10
    assert loss_weights(mask, "hole", 1, 10.0, ring=True).sum().item() == 4 * 1 + 12 * 10  # the centre model's ring
    assert torch.equal(loss_weights(mask, "hole", 1, 10.0), mask.float())
    assert torch.equal(loss_weights(mask, "image", 1, 10.0), torch.ones(1, 1, 6, 6))
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


def visible_share(weights: torch.Tensor, masks: torch.Tensor) -> float:
    return (weights * ~masks).sum().item() / weights.sum().item()


@pytest.mark.parametrize("kind", ["random_region", "random_block"])
def test_loss_regions_put_their_weight_where_they_say(kind):
    masks = sample_masks(kind, 200, 32, gen())
    # The paper's Eq. 1 (the default region): at least 95% of the weight on hidden pixels (here all of it).
    assert visible_share(loss_weights(masks, "hole", 1, 10.0), masks) <= 0.05
    # Today's ring at 10x on every shape puts most of the weight on visible pixels.
    assert visible_share(loss_weights(masks, "hole+ring", 1, 10.0), masks) > 0.5
    assert visible_share(loss_weights(masks, "image", 1, 10.0), masks) == pytest.approx(0.75, abs=0.02)


def test_unknown_loss_region_lists_valid_names():
    with pytest.raises(UserError, match="valid: hole, image, hole\\+ring"):
        loss_weights(torch.zeros(1, 1, 4, 4, dtype=torch.bool), "ring", 1, 10.0)
    assert LOSS_REGIONS == ("hole", "image", "hole+ring")
