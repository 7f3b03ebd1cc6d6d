"""Evaluators: plain functions `(encoder, train, test, config) -> dict[str, float]`.

They run on an encoder rebuilt from a checkpoint file, in eval mode, never on live training
state; a protocol whose config says `uses_model` (inpainting) gets the whole rebuilt pretext
model instead, decoder included. `PROTOCOLS` maps each protocol name to its config dataclass and function.

Each config names the annotation it needs as the class attribute `target`: `labels` (class
indices or multi-hot) or `class_maps` (per-pixel classes).
"""

from __future__ import annotations

from ctxenc.evaluators.finetune import FinetuneConfig, finetune
from ctxenc.evaluators.inpainting import InpaintingConfig, inpainting
from ctxenc.evaluators.knn import KNNConfig, knn
from ctxenc.evaluators.linear_probe import LinearProbeConfig, linear_probe
from ctxenc.evaluators.segmentation import SegmentationConfig, segmentation

PROTOCOLS = {
    "linear_probe": (LinearProbeConfig, linear_probe),
    "knn": (KNNConfig, knn),
    "finetune": (FinetuneConfig, finetune),
    "segmentation": (SegmentationConfig, segmentation),
    "inpainting": (InpaintingConfig, inpainting),
}
# The label types (`ImageDataset.task`) each protocol can evaluate on; the runner refuses others.
PROTOCOL_TASKS = {
    "linear_probe": ("single_label", "multi_label"),
    "knn": ("single_label",),
    "finetune": ("single_label", "multi_label"),
    "segmentation": ("segmentation",),
    "inpainting": ("single_label", "multi_label", "segmentation", "unlabeled"),  # images only
}

__all__ = ["PROTOCOLS", "PROTOCOL_TASKS", "FinetuneConfig", "InpaintingConfig", "KNNConfig", "LinearProbeConfig",
           "SegmentationConfig", "finetune", "inpainting", "knn", "linear_probe", "segmentation"]
