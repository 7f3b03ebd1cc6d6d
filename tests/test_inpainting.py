import math

import pytest
import torch

from ctxenc.encoders import create_encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.inpainting import (
    METHODS, METRICS, InpaintingConfig, biharmonic, blend_overlap, gradient_energy, hog_features, inpainting,
    inpainting_metrics, mean_fill, nearest_neighbours, paste_neighbours,
)
from ctxenc.masks import sample_masks
from ctxenc.pretext import PretrainData, build_pretext, pretext_spec


def center(size=16):
    return sample_masks("center", 1, size)


def test_metrics_of_a_known_error():
    original = torch.zeros(3, 1, 16, 16)  # 0.5 in [0, 1]
    mask = center()
    completed = torch.where(mask, torch.tensor(0.2), original)  # 0.6 in the hole: error 0.1 everywhere in it
    completed[:, :, 0, 0] = 1.0  # errors outside the hole do not count
    m = inpainting_metrics(completed, original, mask)
    assert m["l1"] == pytest.approx(0.1)
    assert m["l2"] == pytest.approx(0.01)
    assert m["psnr"] == pytest.approx(20.0)  # 10 log10(1 / 0.01)


def test_psnr_is_averaged_per_image():
    original = torch.zeros(2, 1, 16, 16)
    mask = center()
    completed = original.clone()
    completed[0] = torch.where(mask[0], torch.tensor(0.2), original[0])  # mse 0.01 -> 20 dB
    completed[1] = torch.where(mask[0], torch.tensor(0.02), original[1])  # error 0.01, mse 1e-4 -> 40 dB
    m = inpainting_metrics(completed, original, mask)
    assert m["psnr"] == pytest.approx(30.0)
    assert m["l2"] == pytest.approx((0.01 + 1e-4) / 2)


def test_identical_images_have_ssim_1_and_sharpness_1():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    m = inpainting_metrics(x, x, center())
    assert m["ssim"] == pytest.approx(1.0)
    assert m["sharpness"] == pytest.approx(1.0)
    assert m["l2"] == 0 and m["psnr"] == pytest.approx(100.0)


def test_gradient_energy_by_hand():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0  # hole = rows 1-2, cols 1-2 of a 4x4 image
    mask = sample_masks("center", 1, 4)
    # pairs inside the hole touching (1, 1): right (1, 2) and down (2, 1): 1 + 1; the pairs
    # leaving the hole ((1, 0)-(1, 1), (0, 1)-(1, 1)) do not count.
    assert gradient_energy(x, mask).tolist() == [2.0]
    assert gradient_energy(x * 3, mask).tolist() == [18.0]


def test_mean_fill_is_flat_and_biharmonic_keeps_a_linear_ramp():
    ramp = torch.linspace(-1, 1, 16).view(1, 1, 1, 16).expand(2, 1, 16, 16).contiguous()
    mask = center()
    assert inpainting_metrics(mean_fill(ramp, ramp, mask), ramp, mask)["sharpness"] == 0
    # A linear ramp is harmonic, so biharmonic inpainting restores it almost exactly.
    assert inpainting_metrics(biharmonic(ramp, mask), ramp, mask)["l2"] < 1e-6


def test_nearest_neighbours_by_hand():
    train = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    query = torch.tensor([[9.0, 1.0], [1.0, 8.0], [0.5, 0.5]])
    assert nearest_neighbours(train, query).tolist() == [1, 2, 0]


def test_hog_nearest_neighbour_finds_the_image_with_the_same_context():
    # Train images: stripes of different orientations and widths; a query is one of them with
    # its hole scrambled, so only the context tells which one it is.
    size = 32
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    patterns = [((xx // w) % 2) for w in (2, 3, 4)] + [((yy // w) % 2) for w in (2, 3, 4)] + [(((xx + yy) // 3) % 2)]
    train = torch.stack([p.float() * 2 - 1 for p in patterns])[:, None]
    mask = center(size)
    torch.manual_seed(0)
    query = torch.where(mask, torch.rand(len(train), 1, size, size) * 2 - 1, train)
    index = nearest_neighbours(hog_features(train, mask), hog_features(query, mask))
    assert index.tolist() == list(range(len(train)))
    assert torch.equal(paste_neighbours(train, query, mask, index), train)


def test_blend_overlap_fades_the_prediction_over_the_border():
    images = torch.zeros(1, 1, 8, 8)
    prediction = torch.ones(1, 1, 8, 8)
    mask = sample_masks("center", 1, 8)  # rows/cols 2-5
    out = blend_overlap(images, prediction, mask, overlap_px=1)
    assert out[0, 0, 3, 3] == 1 and out[0, 0, 1, 3] == 0.5 and out[0, 0, 1, 1] == 0.5 and out[0, 0, 0, 0] == 0
    out = blend_overlap(images, prediction, mask, overlap_px=2)
    assert out[0, 0, 1, 3] == pytest.approx(2 / 3) and out[0, 0, 0, 3] == pytest.approx(1 / 3)
    assert torch.equal(blend_overlap(images, prediction, mask, 0), mask.float())


def test_evaluator_scores_every_method_on_a_tiny_context_encoder():
    torch.manual_seed(0)
    model = build_pretext(pretext_spec({"name": "context_encoder", "mask": "center"}), create_encoder("small"), PretrainData(fill=torch.zeros(1)))
    train = (torch.rand(40, 1, 32, 32) * 2 - 1, torch.zeros(40))
    test = (torch.rand(12, 1, 32, 32) * 2 - 1, torch.zeros(12))
    scores = inpainting(model, train, test, InpaintingConfig(num_images=5))
    assert set(scores) == {f"{m}/{k}" for m in METHODS for k in METRICS}
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["mean_fill/sharpness"] == 0


def test_evaluator_refuses_a_random_init_checkpoint():
    model = build_pretext(pretext_spec("random"), create_encoder("small"), PretrainData(fill=torch.zeros(1)))
    with pytest.raises(UserError, match="needs a context_encoder checkpoint"):
        inpainting(model, (torch.zeros(4, 1, 32, 32), None), (torch.zeros(4, 1, 32, 32), None))


def test_unknown_method_names_the_valid_ones():
    with pytest.raises(UserError, match="valid methods: mean_fill"):
        InpaintingConfig(methods=("poisson",))
