import pytest
import torch

from ctxenc.encoders import ENCODERS, create_encoder
from ctxenc.errors import UserError
from ctxenc.losses import discriminator_loss, generator_loss, masked_l2
from ctxenc.masks import sample_masks
from ctxenc.pretext import PRETEXTS, PretrainData, build_pretext, pretext_spec
from ctxenc.pretext.layers import ChannelwiseFC


def make(encoder, name="context_encoder", channels=1, **options):
    """The pretext `name` with `options` around `encoder`, filled with zeros."""
    return build_pretext(pretext_spec({"name": name, **options}), encoder, PretrainData(fill=torch.zeros(channels)))

# Small sizes keep the parametrised smoke test fast; every registered encoder must be listed
# (registry name -> the name to build and its options; timm through one backbone).
ENCODER_CASES = {
    "small": ("small", {"in_channels": 1, "input_size": 32}),
    "dcgan": ("dcgan", {"in_channels": 3, "input_size": 32, "bottleneck": 64}),
    "alexnet": ("alexnet", {"in_channels": 3, "input_size": 227}),  # the paper's size: pool5 6x6, not a power of two
    "timm": ("timm:resnet18", {"in_channels": 3, "input_size": 64}),
}


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
def test_every_encoder_with_the_inpainting_pretexts(encoder_name):
    torch.manual_seed(0)
    name, options = ENCODER_CASES[encoder_name]
    encoder = create_encoder(name, **options)
    c, s = encoder.in_channels, encoder.input_size
    images = torch.rand(4, c, s, s) * 2 - 1
    features = encoder.forward_features(images)
    assert list(features) == encoder.stage_names
    assert encoder.pooled(images).shape == (4, encoder.num_features)
    assert encoder.pooled(images, encoder.stage_names[0], grid=2).shape[1] == 4 * features[encoder.stage_names[0]].shape[1]
    assert make(encoder, "autoencoder", c)(images).shape == images.shape
    model = make(encoder, channels=c, adversarial=True)
    out = model.forward_loss(images, sample_masks("random_region", 4, s, torch.Generator().manual_seed(0)))
    assert out["prediction"].shape == images.shape and out["prediction"].abs().max() <= 1
    out["loss_rec"].backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert model.discriminator(out["completed"]).shape == (4,)


@pytest.mark.parametrize("name", sorted(PRETEXTS))
def test_every_registered_pretext_trains_a_few_steps_with_the_generic_loop(name, tmp_path):
    """One parametrised smoke test per registered pretext: the generic loop, a falling-or-finite loss, a label."""
    from ctxenc.engine import TrainConfig, train_loop

    torch.manual_seed(0)
    channels = 3
    spec = pretext_spec({"name": name})
    info = PretrainData(fill=torch.zeros(channels), num_classes=10, task="multi_label")
    model = build_pretext(spec, create_encoder("small", in_channels=channels), info)
    assert spec.label.startswith(name) and spec.record_fields()["method"] == spec.label
    images = torch.randint(0, 256, (16, channels, 32, 32), dtype=torch.uint8)
    labels = (torch.rand(16, 10) < 0.3).float()
    before = [p.detach().clone() for p in model.encoder.parameters()]
    if model.trains:
        seconds, steps = train_loop(model, images, labels, TrainConfig(batch_size=8, max_steps=2), tmp_path, {"pretext": spec.as_dict()},
                                    progress=False)
        assert steps == 2 and (tmp_path / "log.jsonl").read_text().count("\n") == 1
        assert any(not torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))


def test_labels_carry_every_option_off_its_default():
    assert pretext_spec({"name": "context_encoder"}).label == "context_encoder/random_region/l2"
    assert pretext_spec({"name": "context_encoder", "adversarial": True, "mask": "center"}).label == "context_encoder/center/l2+adv"
    assert (pretext_spec({"name": "context_encoder", "overlap_px": 0}).label
            != pretext_spec({"name": "context_encoder", "overlap_px": 1}).label)
    assert pretext_spec({"name": "context_encoder", "loss_region": "image"}).label == "context_encoder/random_region/l2/loss_region=image"
    assert pretext_spec({"name": "random", "init": "pytorch"}).label == "random/init=pytorch"


def test_under_the_default_loss_region_the_weight_lies_on_hidden_pixels():
    gen = torch.Generator().manual_seed(0)
    for mask in ("random_region", "random_block"):
        cfg = pretext_spec({"name": "context_encoder", "mask": mask}).cfg
        masks = sample_masks(mask, 200, 32, gen, **cfg.mask_options(32))
        weights = cfg.loss_weights(masks)
        assert (weights * masks).sum() / weights.sum() >= 0.95
        ring = pretext_spec({"name": "context_encoder", "mask": mask, "loss_region": "hole+ring"}).cfg.loss_weights(masks)
        assert (ring * ~masks).sum() / ring.sum() > 0.5  # today's old default: mostly visible pixels
        image = pretext_spec({"name": "context_encoder", "mask": mask, "loss_region": "image"}).cfg.loss_weights(masks)
        assert torch.equal(image, torch.ones_like(image))


def test_pytorch_init_differs_from_the_papers_gaussian():
    torch.manual_seed(0)
    gaussian = make(create_encoder("small"), "random")
    torch.manual_seed(0)
    default = make(create_encoder("small"), "random", init="pytorch")
    w_g, w_d = gaussian.encoder.stages["conv1"][0].weight, default.encoder.stages["conv1"][0].weight
    assert w_g.std().item() == pytest.approx(0.02, rel=0.3) and w_d.std().item() > 2 * w_g.std().item()


def test_context_encoder_completion_keeps_the_context():
    torch.manual_seed(0)
    model = make(create_encoder("small"))
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    masks = sample_masks("center", 2, 32)
    out = model.forward_loss(images, masks)
    assert torch.equal(out["completed"][~masks.expand_as(images)], images[~masks.expand_as(images)])


def test_bad_pretext_options():
    with pytest.raises(UserError, match="unknown pretext 'jigsaw'.*valid pretexts: .*context_encoder"):
        pretext_spec({"name": "jigsaw"})
    with pytest.raises(UserError, match="overlap"):
        pretext_spec({"name": "context_encoder", "overlap_px": -1})
    with pytest.raises(UserError, match=r"autoencoder\) takes no options, got 'adversarial'"):
        pretext_spec({"name": "autoencoder", "adversarial": True})
    with pytest.raises(UserError, match="loss region"):
        pretext_spec({"name": "context_encoder", "loss_region": "ring"})
    with pytest.raises(UserError, match="valid encoders: alexnet, dcgan, small, timm:<model>"):
        create_encoder("resnet")
