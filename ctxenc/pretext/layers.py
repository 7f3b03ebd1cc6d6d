"""The building blocks between encoder and pixels: channel-wise FC, up-conv decoder, discriminator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.encoders.base import WholeMapConv2d
from ctxenc.errors import UserError


class ChannelwiseFC(nn.Module):
    """A fully connected layer within each channel (Pathak et al. 2016, Sec. 3.1).

    m maps of n x n -> m maps of n x n, with no weights across maps: m * n^4 weights instead of
    m^2 * n^4. The parameters are those of a grouped convolution with kernel n and groups=m that
    produces m * n^2 outputs (output j of group g is the j-th pixel of map g): `fc.weight`
    (m * n^2, 1, n, n), `fc.bias` (m * n^2). The forward pass runs them as one batched matmul,
    out[b, g, j] = sum_k W[g, j, k] x[b, g, k] + bias[g, j], which is 5-15x faster on the CPU
    than oneDNN's grouped convolution (forward + backward) and gives the same numbers.
    """

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.channels, self.size = channels, size
        self.fc = nn.Conv2d(channels, channels * size * size, kernel_size=size, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, m, n, n) -> (B, m, n, n)."""
        m, k = self.channels, self.size * self.size
        out = torch.einsum("bgk,gjk->bgj", x.reshape(x.shape[0], m, k), self.fc.weight.view(m, k, k))
        return (out + self.fc.bias.view(m, k)).view(x.shape[0], m, self.size, self.size)


class WholeMapConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d that, on a 1x1 map with stride 1 and no padding, is one matmul.

    (B, C, 1, 1) -> (B, C_out, k, k) as x @ W.view(C, C_out * k * k); any other input goes
    through the ordinary transposed convolution. Same parameters as `nn.ConvTranspose2d`.
    Why: the decoder's first up-convolution (4000 x 1 x 1 -> 512 x 4 x 4) takes a slow
    non-oneDNN path on the CPU, 8x slower than the matmul (forward + backward).
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if x.shape[-2:] != (1, 1) or self.stride != (1, 1) or self.padding != (0, 0) or self.groups != 1 or output_size is not None:
            return super().forward(x, output_size)
        w = self.weight  # (C, C_out, k, k)
        if not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
            # (C, k, k, C_out) is the channels-last weight's memory order: a view, not a copy.
            out = (x.flatten(1) @ w.permute(0, 2, 3, 1).flatten(1)).view(x.shape[0], *self.kernel_size, self.out_channels)
            out = out.permute(0, 3, 1, 2)
        else:
            out = (x.flatten(1) @ w.flatten(1)).view(x.shape[0], self.out_channels, *self.kernel_size)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)


class UpConvDecoder(nn.Module):
    """(B, C, n, n) -> (B, out_channels, out_size, out_size) in [-1, 1].

    4x4 stride-2 up-convolutions with BatchNorm + ReLU, halving the width each time (at least
    32), and Tanh on the last. A 1x1 bottleneck first goes to 4x4 with a 4x4 up-convolution,
    as in the paper's DCGAN decoder. When out_size is not n times a power of two (AlexNet's
    pool5 is 6x6 for a 227 px image), the up-convolutions go to the nearest such size
    (6 -> 192: five of them, as the paper's AlexNet decoder) and a bilinear resize makes the
    output exactly out_size; a convex blend of Tanh outputs stays in [-1, 1].
    """

    def __init__(self, in_channels: int, in_size: int, out_channels: int, out_size: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = min(in_channels, 512)
        c = in_channels
        if in_size == 1:
            layers += [WholeMapConvTranspose2d(c, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
            c, in_size = width, 4
        if in_size >= out_size:
            raise UserError(f"the decoder needs a feature map smaller than the image, got {in_size} px for {out_size} px.")
        ups = max(1, round(math.log2(out_size / in_size)))
        for i in range(ups):
            last = i == ups - 1
            width = out_channels if last else max(32, c // 2)
            layers.append(nn.ConvTranspose2d(c, width, 4, 2, 1, bias=last))
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(width), nn.ReLU(True)]
            c = width
        self.net = nn.Sequential(*layers)
        self.out_size = out_size
        self.resize = in_size * 2**ups != out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(x)
        if self.resize:
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return x


class Discriminator(nn.Module):
    """DCGAN discriminator: 4x4 stride-2 convs 64->128->256->512 while the map is at least 8 px,
    then one conv over what is left (4-7 px) to a logit. No BatchNorm on the first layer.

    Input (B, C, S, S) in [-1, 1], S >= 4 (any size: the hole plus its overlap border is 18 px
    at 32) -> logits (B,).
    """

    def __init__(self, in_channels: int, input_size: int):
        super().__init__()
        if input_size < 4:
            raise UserError(f"the discriminator needs inputs of at least 4 px, got {input_size}.")
        layers: list[nn.Module] = []
        c, size, i = in_channels, input_size, 0
        while size >= 8:
            width = min(64 * 2**i, 512)
            layers.append(nn.Conv2d(c, width, 4, 2, 1, bias=False))
            if i > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c, size, i = width, size // 2, i + 1
        layers.append(WholeMapConv2d(c, 1, size, 1, 0))  # over the whole 4-7 px map: a matmul
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()
