"""AlexNet conv1-pool5, the paper's feature encoder (Krizhevsky et al. 2012; Pathak et al. 2016, Sec. 4).

227 x 227 input -> pool5 256 x 6 x 6, trained from scratch. Widths and kernels are the original
(CaffeNet) ones, 96-256-384-384-256. Two deliberate changes, for training from scratch with
Adam and no labels: BatchNorm after every convolution instead of local response normalisation,
and no channel groups (the original split conv2/4/5 over two GPUs). Weights start from
N(0, 0.02), as every pretext model here.

Stages (227 px): conv1 96x27x27 (after pool1) · conv2 256x13x13 (after pool2) · conv3 384x13x13 ·
conv4 384x13x13 · conv5 256x13x13 · pool5 256x6x6. Segmentation heads use conv5; the
channel-wise FC of a context encoder sits on pool5.
"""

from __future__ import annotations

from torch import nn

from ctxenc.encoders import register_encoder
from ctxenc.encoders.base import Encoder, init_dcgan_weights
from ctxenc.errors import UserError


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


@register_encoder("alexnet")
class AlexNetEncoder(Encoder):
    def __init__(self, in_channels: int = 3, input_size: int = 227):
        super().__init__()
        if input_size < 67:  # below this, pool5 has no pixel left
            raise UserError(f"the alexnet encoder needs inputs of at least 67 px (227 in the paper), got {input_size}.")
        self.in_channels, self.input_size = in_channels, input_size
        self.stages = nn.ModuleDict({
            "conv1": nn.Sequential(*conv_bn_relu(in_channels, 96, 11, 4), nn.MaxPool2d(3, 2)),
            "conv2": nn.Sequential(*conv_bn_relu(96, 256, 5, padding=2), nn.MaxPool2d(3, 2)),
            "conv3": nn.Sequential(*conv_bn_relu(256, 384, 3, padding=1)),
            "conv4": nn.Sequential(*conv_bn_relu(384, 384, 3, padding=1)),
            "conv5": nn.Sequential(*conv_bn_relu(384, 256, 3, padding=1)),
            "pool5": nn.MaxPool2d(3, 2),
        })
        init_dcgan_weights(self)
