"""Any timm backbone as an encoder: `timm:<model>` (e.g. `timm:resnet18`), through `features_only`.

The backbone is built with `pretrained=False` (features are learned from scratch here) and
`in_chans` from the data; its stages are timm's feature levels, named after the modules that
produce them (resnet18: act1, layer1 .. layer4). The whole backbone runs for every call, so
`forward_features(x, until)` only trims the returned dict.
"""

from __future__ import annotations

import torch

from ctxenc.encoders import register_encoder
from ctxenc.encoders.base import Encoder
from ctxenc.errors import UserError


@register_encoder("timm")
class TimmEncoder(Encoder):
    def __init__(self, model: str, in_channels: int = 3, input_size: int = 224):
        super().__init__()
        import timm

        if not timm.is_model(model):
            close = timm.list_models(f"*{model}*")[:5]
            raise UserError(f"timm has no model {model!r}" + (f"; close names: {', '.join(close)}." if close else "."))
        self.in_channels, self.input_size = in_channels, input_size
        try:
            self.net = timm.create_model(model, pretrained=False, features_only=True, in_chans=in_channels)
        except (RuntimeError, TypeError, ValueError) as err:
            raise UserError(f"timm model {model!r} has no features_only form ({err}); pick a convolutional backbone.") from None
        self._stage_names = [name.replace(".", "_") for name in self.net.feature_info.module_name()]
        try:
            self.feature_shapes()
        except (RuntimeError, AssertionError, ValueError) as err:
            raise UserError(f"timm model {model!r} cannot take {input_size} px inputs ({str(err).splitlines()[0][:100]}).") from None

    @property
    def stage_names(self) -> list[str]:
        return self._stage_names

    def forward_features(self, x: torch.Tensor, until: str | None = None) -> dict[str, torch.Tensor]:
        """x: (B, C, S, S) in [-1, 1] -> {stage: (B, C_stage, H_stage, W_stage)}, in order."""
        features = {}
        for name, fmap in zip(self._stage_names, self.net(x)):
            features[name] = fmap
            if name == until:
                break
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]
