"""`random`: the baseline every pretext must beat, the encoder as initialised and never trained.

Two initialisations, both shown in the Table-2 miniature: `dcgan` (the paper's Gaussian
N(0, 0.02), BatchNorm weight N(1, 0.02)) and `pytorch` (PyTorch's default Kaiming-uniform).
"""

from __future__ import annotations

from dataclasses import dataclass

from ctxenc.errors import UserError
from ctxenc.pretext.base import Pretext, register_pretext

INITS = ("dcgan", "pytorch")


@dataclass(frozen=True)
class RandomConfig:
    init: str = "dcgan"

    def __post_init__(self):
        if self.init not in INITS:
            raise UserError(f"unknown random init {self.init!r}; valid: {', '.join(INITS)}.")


@register_pretext
class RandomInit(Pretext):
    """The encoder as initialised, never trained (init=dcgan: N(0, 0.02), the paper's; init=pytorch: PyTorch's default)."""

    name = "random"
    Config = RandomConfig
    trains = False

    def __init__(self, encoder, cfg: RandomConfig, data):
        super().__init__(encoder, cfg, data)
        if cfg.init == "pytorch":  # encoders are built with the DCGAN init; redraw PyTorch's own
            for module in encoder.modules():
                if module is not encoder and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
