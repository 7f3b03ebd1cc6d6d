"""Pretext methods (`random`, `autoencoder`, `context_encoder`) keyed by the names tables use."""

from ctxenc.pretext.config import PRETEXTS, PretextConfig
from ctxenc.pretext.model import PRETEXT_MODELS, InpaintingModel, RandomInit, build_pretext

__all__ = ["PRETEXTS", "PRETEXT_MODELS", "InpaintingModel", "PretextConfig", "RandomInit", "build_pretext"]
