"""Evaluators: plain functions `(encoder, train, test, config) -> dict[str, float]`.

They run on an encoder rebuilt from a checkpoint file, in eval mode, never on live training
state; a protocol whose config says `uses_model` (inpainting) gets the whole rebuilt pretext
model instead, decoder included. `PROTOCOLS` maps each protocol name to its config dataclass and function.
"""

from __future__ import annotations

from ctxenc.evaluators.inpainting import InpaintingConfig, inpainting
from ctxenc.evaluators.knn import KNNConfig, knn
from ctxenc.evaluators.linear_probe import LinearProbeConfig, linear_probe

PROTOCOLS = {
    "linear_probe": (LinearProbeConfig, linear_probe),
    "knn": (KNNConfig, knn),
    "inpainting": (InpaintingConfig, inpainting),
}
# The label types (`ImageDataset.task`) each protocol can evaluate on; the runner refuses others.
PROTOCOL_TASKS = {
    "linear_probe": ("single_label",),
    "knn": ("single_label",),
    "inpainting": ("single_label", "multi_label", "segmentation", "unlabeled"),  # images only
}

__all__ = ["PROTOCOLS", "PROTOCOL_TASKS", "InpaintingConfig", "KNNConfig", "inpainting", "LinearProbeConfig", "knn", "linear_probe"]
