"""Evaluators: plain functions `(encoder, train, test, config) -> dict[str, float]`, registered as protocols.

They run on an encoder rebuilt from a checkpoint file, in eval mode, never on live training
state; a protocol whose config says `uses_model` (inpainting) gets the whole rebuilt pretext
model instead, decoder included. Each config names the annotation it needs as the class
attribute `target`: `labels` (class indices or multi-hot), `class_maps` (per-pixel classes) or
`boxes`.

To add a protocol: write `ctxenc/evaluators/<name>.py` (a config dataclass and the function)
and add one `register_protocol(...)` line below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from ctxenc.evaluators.detection import DetectionConfig, detection
from ctxenc.evaluators.finetune import FinetuneConfig, finetune
from ctxenc.evaluators.inpainting import InpaintingConfig, inpainting
from ctxenc.evaluators.knn import KNNConfig, knn
from ctxenc.evaluators.linear_probe import LinearProbeConfig, linear_probe
from ctxenc.evaluators.segmentation import SegmentationConfig, segmentation

LABELLED = ("single_label", "multi_label")
ANY = ("single_label", "multi_label", "segmentation", "boxes", "unlabeled")


@dataclass(frozen=True)
class Protocol:
    """name: what configs call it; config: its options dataclass; run: the evaluator; tasks:
    the dataset annotations it can evaluate on (the runner refuses others before any work);
    limit: how `--limit` shortens it: an int option is capped at that value, a tuple option
    (a grid) keeps that many first values."""

    name: str
    config: type
    run: Callable
    tasks: tuple[str, ...]
    limit: dict = field(default_factory=dict)

    def limited(self, cfg):
        """`cfg` shortened for `--limit`: a check of the plumbing, not of the search."""
        changes = {}
        for key, cap in self.limit.items():
            value = getattr(cfg, key)
            if isinstance(value, tuple):
                changes[key] = value[:cap]
            elif isinstance(value, int) and not isinstance(value, bool):
                changes[key] = min(value, cap)
        return dataclasses.replace(cfg, **changes)


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    PROTOCOLS[protocol.name] = protocol
    return protocol


register_protocol(Protocol("linear_probe", LinearProbeConfig, linear_probe, LABELLED, {"max_iter": 10, "weight_decays": 1}))
register_protocol(Protocol("knn", KNNConfig, knn, ("single_label",)))
register_protocol(Protocol("finetune", FinetuneConfig, finetune, LABELLED, {"max_epochs": 1, "min_steps": 0, "lrs": 1}))
register_protocol(Protocol("segmentation", SegmentationConfig, segmentation, ("segmentation",), {"max_epochs": 1, "lrs": 1}))
register_protocol(Protocol("detection", DetectionConfig, detection, ("boxes",), {"max_epochs": 1, "lrs": 1}))
register_protocol(Protocol("inpainting", InpaintingConfig, inpainting, ANY))

__all__ = ["PROTOCOLS", "DetectionConfig", "FinetuneConfig", "InpaintingConfig", "KNNConfig", "LinearProbeConfig", "Protocol",
           "SegmentationConfig", "detection", "finetune", "inpainting", "knn", "linear_probe", "register_protocol", "segmentation"]
