"""Encoders behind one registry and one interface (after timm's `create_model`).

Every encoder is an `Encoder`: features at named stages, a pooled vector and its dimension.
Evaluators and pretext methods depend on that interface and nothing else.
"""

from __future__ import annotations

from typing import Callable

from ctxenc.encoders.base import Encoder, init_dcgan_weights
from ctxenc.errors import UserError

ENCODERS: dict[str, Callable[..., Encoder]] = {}


def register_encoder(name: str):
    """Decorator: make an `Encoder` class or factory creatable as `create_encoder(name, ...)`."""

    def add(factory):
        ENCODERS[name] = factory
        return factory

    return add


def create_encoder(name: str, **kwargs) -> Encoder:
    """Build encoder `name`; its `config` records everything needed to build it again."""
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; valid encoders: {', '.join(sorted(ENCODERS))}.")
    try:
        encoder = ENCODERS[name](**kwargs)
    except TypeError as err:
        raise UserError(f"encoder {name!r} cannot take these options {sorted(kwargs)}: {err}.") from None
    encoder.config = {"name": name, **kwargs}
    return encoder


# Registration happens on import.
from ctxenc.encoders import dcgan, small  # noqa: E402,F401

__all__ = ["ENCODERS", "Encoder", "create_encoder", "init_dcgan_weights", "register_encoder"]
