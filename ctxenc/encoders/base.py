"""The encoder interface every registered encoder implements, and the layers encoders share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    """A CNN whose stages are run in order: `self.stages` maps stage name -> module.

    Subclasses fill `self.stages` (an `nn.ModuleDict`, in order) and set `in_channels` and
    `input_size`; everything else comes from here.
    """

    stages: nn.ModuleDict
    in_channels: int
    input_size: int
    config: dict

    @property
    def stage_names(self) -> list[str]:
        return list(self.stages.keys())

    def forward_features(self, x: torch.Tensor, until: str | None = None) -> dict[str, torch.Tensor]:
        """x: (B, C, S, S) in [-1, 1] -> {stage: (B, C_stage, H_stage, W_stage)}, in order.

        `until` stops after that stage, so a probe on an early stage skips the rest.
        """
        features = {}
        for name, stage in self.stages.items():
            x = stage(x)
            features[name] = x
            if name == until:
                break
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (B, num_features, h, w)."""
        for stage in self.stages.values():
            x = stage(x)
        return x

    def pooled(self, x: torch.Tensor, stage: str | None = None, grid: int = 1) -> torch.Tensor:
        """Average-pool a stage's map to grid x grid cells and flatten. -> (B, C_stage * grid^2)."""
        stage = stage or self.stage_names[-1]
        fmap = self.forward_features(x, until=stage)[stage]
        return F.adaptive_avg_pool2d(fmap, grid).flatten(1)

    @torch.no_grad()
    def feature_shapes(self) -> dict[str, tuple[int, int, int]]:
        """{stage: (C, H, W)} for an input of `input_size`, probed where the encoder's weights are."""
        was_training = self.training
        self.eval()
        weight = next(self.parameters())
        probe = torch.zeros(1, self.in_channels, self.input_size, self.input_size, device=weight.device, dtype=weight.dtype)
        shapes = {k: tuple(v.shape[1:]) for k, v in self.forward_features(probe).items()}
        self.train(was_training)
        return shapes

    @property
    def num_features(self) -> int:
        """Dimension of the pooled vector of the last stage."""
        return self.feature_shapes()[self.stage_names[-1]][0]


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation (the paper's): conv weights N(0, 0.02), BatchNorm weight N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class WholeMapConv2d(nn.Conv2d):
    """A Conv2d that, on a map exactly its kernel's size (no padding: a 1x1 output), is one matmul.

    (B, C, k, k) -> (B, C_out, 1, 1) through `F.linear` on the flattened map; any other input
    goes through the ordinary convolution. Same parameters (and checkpoints) as `nn.Conv2d`.
    Why: oneDNN's convolution backward on such shapes (the dcgan bottleneck 512x4x4 -> 4000, a
    1x1 conv on a 1x1 map) runs at a tenth of the matmul's speed on the CPU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.kernel_size or self.padding != (0, 0) or self.groups != 1 or self.padding_mode != "zeros":
            return super().forward(x)
        w = self.weight
        if not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
            # Flatten (C, k, k) in the weight's own memory order, so the big weight is never copied.
            w, x = w.permute(0, 2, 3, 1), x.permute(0, 2, 3, 1)
        return F.linear(x.flatten(1), w.flatten(1), self.bias).view(x.shape[0], self.out_channels, 1, 1)
