import pytest
import torch

from ctxenc.encoders import create_encoder, default_input_size
from ctxenc.errors import UserError
from ctxenc.pretext import PretrainData, build_pretext, pretext_spec


def test_alexnet_is_the_papers_conv1_to_pool5():
    encoder = create_encoder("alexnet")
    shapes = encoder.feature_shapes()
    assert encoder.input_size == 227 and shapes["pool5"] == (256, 6, 6) and shapes["conv1"] == (96, 27, 27)
    assert [shapes[f"conv{i}"][0] for i in range(1, 6)] == [96, 256, 384, 384, 256]


def test_context_encoder_on_a_6x6_map_decodes_to_227():
    torch.manual_seed(0)
    model = build_pretext(pretext_spec("context_encoder"), create_encoder("alexnet"), PretrainData(fill=torch.zeros(3))).eval()
    ups = [m for m in model.head.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 5  # 6 -> 192, as the paper's five up-convolutions, then resized to 227
    assert model(torch.zeros(1, 3, 227, 227)).shape == (1, 3, 227, 227)
    # channel-wise FC sized for the 6x6 map: m * n^4 weights
    assert model.head.channelwise_fc.fc.weight.numel() == 256 * 6**4


def test_timm_backbone_through_features_only():
    encoder = create_encoder("timm:resnet18", in_channels=1, input_size=64)
    assert encoder.stage_names == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert encoder.feature_shapes()["layer4"] == (512, 2, 2) and encoder.num_features == 512
    assert list(encoder.forward_features(torch.zeros(1, 1, 64, 64), until="layer2")) == ["act1", "layer1", "layer2"]
    assert encoder.config == {"name": "timm:resnet18", "in_channels": 1, "input_size": 64}
    again = create_encoder(**encoder.config)  # a checkpoint rebuilds it from its config
    again.load_state_dict(encoder.state_dict(), strict=True)


def test_default_input_sizes():
    assert [default_input_size(n) for n in ("small", "dcgan", "alexnet", "timm:resnet18")] == [32, 128, 227, 224]


def test_encoder_name_errors():
    with pytest.raises(UserError, match="timm has no model 'resnet9999'"):
        create_encoder("timm:resnet9999")
    with pytest.raises(UserError, match="valid encoders: alexnet, dcgan, small, timm:<model>"):
        create_encoder("vgg")
    with pytest.raises(UserError, match="at least 67 px"):
        create_encoder("alexnet", input_size=32)


@pytest.mark.parametrize("name,size,expected", [
    ("small", 32, {"conv1": (32, 16, 16), "conv2": (64, 8, 8), "conv3": (128, 4, 4)}),
    ("dcgan", 128, {"conv1": (64, 64, 64), "conv2": (64, 32, 32), "conv3": (128, 16, 16), "conv4": (256, 8, 8),
                    "conv5": (512, 4, 4), "bottleneck": (4000, 1, 1)}),
])
def test_stage_shapes_and_a_batch_through_them(name, size, expected):
    """The paper's dcgan stages at 128 px (bottleneck: a 4x4 conv over the whole 4x4 map, run as a matmul)."""
    encoder = create_encoder(name, in_channels=3, input_size=size)
    assert encoder.feature_shapes() == expected
    features = encoder.forward_features(torch.randn(2, 3, size, size))
    assert {k: tuple(v.shape[1:]) for k, v in features.items()} == expected
