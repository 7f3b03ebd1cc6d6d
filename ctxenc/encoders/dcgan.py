"""The DCGAN-style encoder of the paper's inpainting model (Pathak et al. 2016, Sec. 4).

At 128 px: 4x4 stride-2 convolutions 3->64->64->128->256->512 (BatchNorm + LeakyReLU(0.2), no
BatchNorm after the first), then a 4x4 convolution to a 4000-d bottleneck.
"""

from __future__ import annotations

import math

from torch import nn

from ctxenc.encoders import register_encoder
from ctxenc.encoders.base import Encoder, WholeMapConv2d, init_dcgan_weights
from ctxenc.errors import UserError

PAPER_WIDTHS = (64, 64, 128, 256, 512)


@register_encoder("dcgan")
class DCGANEncoder(Encoder):
    """input_size (a power of two >= 8) -> conv1..convK down to 4x4, then `bottleneck` (C, 1, 1)."""

    def __init__(self, in_channels: int = 3, input_size: int = 128, bottleneck: int = 4000,
                 widths: tuple[int, ...] | None = None):
        super().__init__()
        downs = math.log2(input_size / 4) if input_size >= 8 else 0
        if downs < 1 or downs != int(downs):
            raise UserError(f"the dcgan encoder needs a power-of-two input size of at least 8, got {input_size}.")
        downs = int(downs)
        if widths is None:
            widths = PAPER_WIDTHS if downs == 5 else tuple(min(64 * 2**i, 512) for i in range(downs))
        if len(widths) != downs:
            raise UserError(f"a {input_size} px dcgan encoder has {downs} stride-2 stages, but {len(widths)} widths were given.")
        self.in_channels, self.input_size = in_channels, input_size
        chans = (in_channels, *widths)
        stages = {}
        for i in range(downs):
            layers = [nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1, bias=False)]
            if i > 0:
                layers.append(nn.BatchNorm2d(chans[i + 1]))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            stages[f"conv{i + 1}"] = nn.Sequential(*layers)
        stages["bottleneck"] = nn.Sequential(
            WholeMapConv2d(widths[-1], bottleneck, 4, 1, 0, bias=False),  # 4x4 -> 1x1: a matmul nn.BatchNorm2d(bottleneck), nn.LeakyReLU(0.2, inplace=True)
        )
        self.stages = nn.ModuleDict(stages)
        init_dcgan_weights(self)
