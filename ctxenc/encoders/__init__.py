"""Encoders behind one registry and one interface (after timm's `create_model`).

Every encoder is an `Encoder`: features at named stages, a pooled vector and its dimension.
Evaluators and pretext methods depend on that interface and nothing else.
"""

from __future__ import annotations

import inspect
from typing import Callable

from ctxenc.encoders.base import Encoder, WholeMapConv2d, init_dcgan_weights
from ctxenc.errors import UserError

ENCODERS: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str):
    """Decorator: make an `Encoder` class or factory creatable as `create_encoder(name, ...)`."""

    def add(factory):
        ENCODERS[name] = factory
        return factory

    return add


def _factory(name: str) -> tuple[Callable[..., Encoder], dict]:
    """'small' -> (factory, {}); 'timm:resnet18' -> (timm factory, {'model': 'resnet18'})."""
    family, _, variant = name.partition(":")
    if family == "timm" and variant:
        return ENCODERS["timm"], {"model": variant}
    if name not in ENCODERS or name == "timm":
        raise UserError(f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(n for n in ENCODERS if n != 'timm'))}, timm:<model>.")
    return ENCODERS[name], {}


def create_encoder(name: str, **kwargs) -> Encoder:
    """Build encoder `name`; its `config` records everything needed to build it again."""
    factory, fixed = _factory(name)
    try:
        encoder = factory(**fixed, **kwargs)
    except TypeError as err:
        raise UserError(f"encoder {name!r} cannot take these options {sorted(kwargs)}: {err}.") from None
    encoder.config = {"name": name, **kwargs}
    return encoder


def default_input_size(name: str) -> int:
    """The input size encoder `name` is built for when none is given (small 32, dcgan 128, alexnet 227, timm 224)."""
    factory, _ = _factory(name)
    return inspect.signature(factory).parameters["input_size"].default


# Registration happens on import.
from ctxenc.encoders import alexnet, dcgan, small, timm_backbone  # noqa: E402,F401

__all__ = ["ENCODERS", "Encoder", "WholeMapConv2d", "create_encoder", "default_input_size", "init_dcgan_weights", "register_encoder"]
