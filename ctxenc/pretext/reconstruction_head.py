"""The network between an encoder's last stage and pixels, shared by the autoencoder and the
context encoder: channel-wise FC -> 1x1 conv mixing channels -> up-convolution decoder."""

from __future__ import annotations

import torch
from torch import nn

from ctxenc.encoders import Encoder, WholeMapConv2d, init_dcgan_weights
from ctxenc.pretext.layers import ChannelwiseFC, UpConvDecoder


class ReconstructionHead(nn.Module):
    """features (B, C, n, n) of `encoder`'s last stage -> pixels (B, in_channels, out_size, out_size) in [-1, 1].

    The channel-wise FC spreads information across each map (Pathak et al. 2016, Sec. 3.1); the
    1x1 convolution then mixes channels, as the paper's. Weights N(0, 0.02), as DCGAN.
    """

    def __init__(self, encoder: Encoder, out_size: int):
        super().__init__()
        c, n, _ = encoder.feature_shapes()[encoder.stage_names[-1]]
        self.channelwise_fc = ChannelwiseFC(c, n)
        # On a 1x1 map (the dcgan bottleneck) the 1x1 conv is a plain matmul: WholeMapConv2d runs it as one.
        self.mix = nn.Sequential(WholeMapConv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(True))
        self.decoder = UpConvDecoder(c, n, encoder.in_channels, out_size)
        init_dcgan_weights(self)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.mix(self.channelwise_fc(features)))
