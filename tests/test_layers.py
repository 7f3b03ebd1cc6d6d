"""The matmul forms of the context encoder's layers give the convolutions' numbers and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.encoders import WholeMapConv2d, create_encoder
from ctxenc.pretext.layers import ChannelwiseFC, Discriminator, UpConvDecoder, WholeMapConvTranspose2d


def grads(module: nn.Module, x: torch.Tensor, forward) -> list[torch.Tensor]:
    """Output, input gradient and parameter gradients of sum(out * r) for a fixed random r."""
    x = x.clone().requires_grad_(True)
    module.zero_grad(set_to_none=True)
    out = forward(x)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    return [out, x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("m,n", [(3, 4), (5, 1), (2, 6)])
def test_channelwise_fc_is_the_grouped_convolution(m, n):
    """Same numbers and gradients as the grouped convolution its parameters belong to."""
    torch.manual_seed(0)
    layer = ChannelwiseFC(m, n)
    x = torch.randn(3, m, n, n)

    def as_conv(x):
        return F.conv2d(x, layer.fc.weight, layer.fc.bias, groups=m).view(3, m, n, n)

    for ours, reference in zip(grads(layer, x, layer), grads(layer, x, as_conv)):
        torch.testing.assert_close(ours, reference)


def test_channelwise_fc_by_hand():
    """1 channel of 2x2: out = W @ x + b on the flattened map; channel 2 never sees channel 1."""
    layer = ChannelwiseFC(2, 2)
    with torch.no_grad():
        layer.fc.weight.zero_()
        layer.fc.bias.zero_()
        layer.fc.weight[:4].view(4, 4).copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]]))
        layer.fc.bias[4:] = 7.0
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[9.0, 9.0], [9.0, 9.0]]]])
    assert layer(x).tolist() == [[[[1.0, 4.0], [10.0, 0.0]], [[7.0, 7.0], [7.0, 7.0]]]]


def test_channelwise_fc_in_channels_last_memory():
    layer = ChannelwiseFC(4, 3)
    x = torch.randn(2, 4, 3, 3)
    expected = layer(x)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), expected)
    layer = layer.to(memory_format=torch.channels_last)
    torch.testing.assert_close(layer(x.contiguous(memory_format=torch.channels_last)), expected)


@pytest.mark.parametrize("bias", [False, True])
def test_whole_map_conv_is_the_convolution(bias):
    torch.manual_seed(0)
    layer = WholeMapConv2d(6, 5, 4, bias=bias)
    x = torch.randn(3, 6, 4, 4)
    reference = lambda x: F.conv2d(x, layer.weight, layer.bias)  # noqa: E731
    for ours, ref in zip(grads(layer, x, layer), grads(layer, x, reference)):
        torch.testing.assert_close(ours, ref)
    assert layer(x).shape == (3, 5, 1, 1)


def test_whole_map_layers_in_channels_last_memory():
    """A channels-last model (weights NHWC in memory) gives the same numbers."""
    torch.manual_seed(0)
    conv, up = WholeMapConv2d(6, 5, 4, bias=True), WholeMapConvTranspose2d(6, 5, 4, 1, 0, bias=True)
    x, v = torch.randn(3, 6, 4, 4), torch.randn(3, 6, 1, 1)
    expected = conv(x), up(v)
    conv, up = conv.to(memory_format=torch.channels_last), up.to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous() and not up.weight.is_contiguous()
    for cl in (False, True):
        fmt = torch.channels_last if cl else torch.contiguous_format
        torch.testing.assert_close(conv(x.contiguous(memory_format=fmt)), expected[0])
        torch.testing.assert_close(up(v.contiguous(memory_format=fmt)), expected[1])


def test_whole_map_conv_on_larger_maps_stays_a_convolution():
    layer = WholeMapConv2d(2, 3, 1)
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias))


@pytest.mark.parametrize("bias", [False, True])
def test_whole_map_up_convolution_is_the_transposed_convolution(bias):
    torch.manual_seed(0)
    layer = WholeMapConvTranspose2d(6, 5, 4, 1, 0, bias=bias)
    x = torch.randn(3, 6, 1, 1)
    reference = lambda x: F.conv_transpose2d(x, layer.weight, layer.bias)  # noqa: E731
    for ours, ref in zip(grads(layer, x, layer), grads(layer, x, reference)):
        torch.testing.assert_close(ours, ref)
    assert layer(x).shape == (3, 5, 4, 4)
    wider = torch.randn(2, 6, 3, 3)  # not a 1x1 map: the ordinary transposed convolution
    torch.testing.assert_close(layer(wider), F.conv_transpose2d(wider, layer.weight, layer.bias))


def test_decoder_from_a_bottleneck_vector():
    decoder = UpConvDecoder(40, 1, 3, 64)
    assert isinstance(decoder.net[0], WholeMapConvTranspose2d)
    assert decoder(torch.randn(2, 40, 1, 1)).shape == (2, 3, 64, 64)


def test_discriminator_ends_in_a_whole_map_conv():
    disc = Discriminator(3, 32)
    assert isinstance(disc.net[-1], WholeMapConv2d) and disc.net[-1].kernel_size == (4, 4)
    assert disc(torch.randn(2, 3, 32, 32)).shape == (2,)


def test_dcgan_checkpoints_keep_their_layout():
    """The matmul forms hold the convolutions' parameters: names and shapes as before."""
    encoder = create_encoder("dcgan", in_channels=3, input_size=32, bottleneck=64)
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes["stages.bottleneck.0.weight"] == (64, 256, 4, 4)
    assert encoder(torch.zeros(2, 3, 32, 32)).shape == (2, 64, 1, 1)
    layer = ChannelwiseFC(4, 3)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == {"fc.weight": (36, 1, 3, 3), "fc.bias": (36,)}
