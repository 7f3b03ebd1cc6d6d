"""Pretext methods, one file each, registered by name (the names tables use).

To add one: write `ctxenc/pretext/<name>.py` with a `Pretext` subclass decorated with
`@register_pretext` (see base.py for what it declares), and add the module to the import line
below.
"""

from ctxenc.pretext.base import (PRETEXTS, Pretext, PretextSpec, PretrainData, StepContext, TrainingDiverged,
                                 build_pretext, pretext_spec, register_pretext)

# Registration happens on import: one module per pretext.
from ctxenc.pretext import autoencoder, context_encoder, random_init, rotation, context_prediction, colorization, supervised  # noqa: E402,F401

__all__ = ["PRETEXTS", "Pretext", "PretextSpec", "PretrainData", "StepContext", "TrainingDiverged", "build_pretext",
           "pretext_spec", "register_pretext"]
