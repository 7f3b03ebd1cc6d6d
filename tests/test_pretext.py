import pytest
import torch

from ctxenc.encoders import ENCODERS, create_encoder
from ctxenc.errors import UserError
from ctxenc.losses import discriminator_loss, generator_loss, masked_l2
from ctxenc.masks import sample_masks
from ctxenc.pretext import PRETEXTS, PretextConfig, build_pretext
from ctxenc.pretext.layers import ChannelwiseFC

# Small sizes keep the parametrised smoke test fast; every registered encoder must be listed
# (registry name -> the name to build and its options; timm through one backbone).
ENCODER_CASES = {
    "small": ("small", {"in_channels": 1, "input_size": 32}),
    "dcgan": ("dcgan", {"in_channels": 3, "input_size": 32, "bottleneck": 64}),
    "alexnet": ("alexnet", {"in_channels": 3, "input_size": 227}),  # the paper's size: pool5 6x6, not a power of two
    "timm": ("timm:resnet18", {"in_channels": 3, "input_size": 64}),
}


def test_every_pretext_name_has_a_model():
    from ctxenc.pretext import PRETEXT_MODELS

    assert tuple(PRETEXT_MODELS) == PRETEXTS


def test_channelwise_fc_matches_per_channel_matmul():
    torch.manual_seed(0)
    m, n = 3, 4
    layer = ChannelwiseFC(m, n)
    x = torch.randn(2, m, n, n)
    # weight (m*n^2, 1, n, n): rows g*n^2 ... (g+1)*n^2 - 1 are the n^2 x n^2 matrix of channel g.
    weights = layer.fc.weight.view(m, n * n, n * n)
    bias = layer.fc.bias.view(m, n * n)
    expected = torch.stack([x[:, g].flatten(1) @ weights[g].T + bias[g] for g in range(m)], dim=1).view(2, m, n, n)
    torch.testing.assert_close(layer(x), expected)
    assert sum(p.numel() for p in layer.parameters()) == m * n**4 + m * n**2  # not m^2 n^4


def test_masked_l2_by_hand():
    prediction = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 0.0]]]])
    weights = torch.tensor([[[[1.0, 10.0], [1.0, 0.0]]]])
    # squared errors weighted: ch0: 1*1 + 10*4 = 41; ch1: 1*9 = 9; total weight = 12 per channel x 2 channels.
    assert masked_l2(prediction, target, weights).item() == pytest.approx(50 / 24)
    assert masked_l2(prediction, target, torch.ones(1, 1, 2, 2)).item() == pytest.approx((1 + 4 + 9) / 8)


def test_adversarial_losses_by_hand():
    zero = torch.zeros(4)
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * torch.log(torch.tensor(2.0)).item())
    assert generator_loss(torch.full((4,), 100.0)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("encoder_name", sorted(ENCODERS))
@pytest.mark.parametrize("pretext", [*PRETEXTS, "context_encoder+adv"])
def test_every_encoder_with_every_pretext(encoder_name, pretext):
    torch.manual_seed(0)
    name, options = ENCODER_CASES[encoder_name]
    encoder = create_encoder(name, **options)
    cfg = PretextConfig(name=pretext.split("+")[0], adversarial=pretext.endswith("+adv"))
    c, s = encoder.in_channels, encoder.input_size
    model = build_pretext(cfg, encoder, torch.zeros(c))
    images = torch.rand(4, c, s, s) * 2 - 1
    features = encoder.forward_features(images)
    assert list(features) == encoder.stage_names
    assert encoder.pooled(images).shape == (4, encoder.num_features)
    assert encoder.pooled(images, encoder.stage_names[0], grid=2).shape[1] == 4 * features[encoder.stage_names[0]].shape[1]
    if pretext == "random":
        return
    masks = sample_masks("random_region", 4, s, torch.Generator().manual_seed(0)) if cfg.uses_masks else None
    out = model.forward_loss(images, masks)
    assert out["prediction"].shape == images.shape and out["prediction"].abs().max() <= 1
    out["loss_rec"].backward()
    assert encoder.stage_names and all(p.grad is not None for p in model.encoder.parameters())
    if cfg.adversarial:
        assert model.discriminator(out["completed"]).shape == (4,)


def test_context_encoder_completion_keeps_the_context():
    torch.manual_seed(0)
    model = build_pretext(PretextConfig(), create_encoder("small"), torch.zeros(1))
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    masks = sample_masks("center", 2, 32)
    out = model.forward_loss(images, masks)
    assert torch.equal(out["completed"][~masks.expand_as(images)], images[~masks.expand_as(images)])


def test_bad_pretext_options():
    with pytest.raises(UserError, match="valid pretexts: random, autoencoder, context_encoder"):
        PretextConfig(name="jigsaw")
    with pytest.raises(UserError, match="overlap"):
        PretextConfig(overlap_px=-1)
    with pytest.raises(UserError, match="context_encoder only"):
        PretextConfig(name="autoencoder", adversarial=True)
    with pytest.raises(UserError, match="valid encoders: alexnet, dcgan, small, timm:<model>"):
        create_encoder("resnet")
