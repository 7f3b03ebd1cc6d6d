"""Pretext methods (`random`, `autoencoder`, `context_encoder`) keyed by the names tables use."""

from ctxenc.pretext.config import PRETEXTS, PretextConfig
from ctxenc.pretext.model import InpaintingModel, RandomInit, build_pretext

__all__ = ["PRETEXTS", "InpaintingModel", "PretextConfig", "RandomInit", "build_pretext"]
