"""Evaluators: plain functions `(encoder, train, test, config) -> dict[str, float]`.

They run on an encoder rebuilt from a checkpoint file, in eval mode, never on live training
state. `PROTOCOLS` maps each protocol name to its config dataclass and function.
"""

from __future__ import annotations

from ctxenc.evaluators.knn import KNNConfig, knn
from ctxenc.evaluators.linear_probe import LinearProbeConfig, linear_probe

PROTOCOLS = {
    "linear_probe": (LinearProbeConfig, linear_probe),
    "knn": (KNNConfig, knn),
}
# The label types (`ImageDataset.task`) each protocol can evaluate on; the runner refuses others.
PROTOCOL_TASKS = {
    "linear_probe": ("single_label",),
    "knn": ("single_label",),
}

__all__ = ["PROTOCOLS", "PROTOCOL_TASKS", "KNNConfig", "LinearProbeConfig", "knn", "linear_probe"]
