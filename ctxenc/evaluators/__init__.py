"""Evaluators: plain functions `(encoder, train, test, config) -> dict[str, float]`.

They run on an encoder rebuilt from a checkpoint file, in eval mode, never on live training
state. `PROTOCOLS` maps each protocol name to its config dataclass and function.

Each config names the annotation it needs as the class attribute `target`: `labels` (class
indices or multi-hot) or `class_maps` (per-pixel classes).
"""

from __future__ import annotations

from ctxenc.evaluators.finetune import FinetuneConfig, finetune
from ctxenc.evaluators.knn import KNNConfig, knn
from ctxenc.evaluators.linear_probe import LinearProbeConfig, linear_probe
from ctxenc.evaluators.segmentation import SegmentationConfig, segmentation

PROTOCOLS = {
    "linear_probe": (LinearProbeConfig, linear_probe),
    "knn": (KNNConfig, knn),
    "finetune": (FinetuneConfig, finetune),
    "segmentation": (SegmentationConfig, segmentation),
}

__all__ = ["PROTOCOLS", "FinetuneConfig", "KNNConfig", "LinearProbeConfig", "SegmentationConfig",
           "finetune", "knn", "linear_probe", "segmentation"]
