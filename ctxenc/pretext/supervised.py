"""`supervised`: the reference row above every pretext, the same encoder trained with labels.

The paper's "ImageNet" row (Table 2): features learnt from human labels rather than from the
images alone. Here the encoder is trained on the labels of the pretraining split itself (a
labelled pool such as FashionScenes'), through a linear head on its pooled last stage
(optionally pooled to a grid x grid map first, so the head sees where things are):

- single-label data (labels int64 (B,)): softmax cross-entropy over the classes;
- multi-label data (labels float (B, K): 1 present, 0 absent, -1 ignore): a binary
  cross-entropy per class, ignored entries weighted 0, averaged over all B x K entries as the
  fine-tuning evaluator does (the same loss with one process or many).

It tells a reader how much room there is above random init on the benchmark's own data; unlike
the paper's ImageNet row, its labels come from the same distribution as the evaluation's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.errors import UserError
from ctxenc.pretext.base import Pretext, register_pretext

TASKS = ("single_label", "multi_label")


@dataclass(frozen=True)
class SupervisedConfig:
    """grid: average-pool the last stage to grid x grid cells before the linear head (1: global pooling)."""

    grid: int = 1

    def __post_init__(self):
        if not 1 <= self.grid <= 8:
            raise UserError(f"grid must be 1-8 cells per side, got {self.grid}.")


def label_loss(logits: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """logits: (B, K); labels: int64 (B,) for single_label, float (B, K) in {1, 0, -1 ignore} for
    multi_label -> the scalar loss (module docstring)."""
    if task == "single_label":
        return F.cross_entropy(logits, labels)
    return F.binary_cross_entropy_with_logits(logits, labels.clamp_min(0), weight=(labels >= 0).to(logits.dtype))


@register_pretext
class Supervised(Pretext):
    """Train the encoder on the pretraining split's labels (the paper's ImageNet reference row)."""

    name = "supervised"
    Config = SupervisedConfig
    needs_labels = True
    loss_name = "cross_entropy"

    def __init__(self, encoder, cfg: SupervisedConfig, data):
        super().__init__(encoder, cfg, data)
        if data.task not in TASKS or not data.num_classes:
            raise UserError(f"supervised pretraining needs single_label or multi_label class labels, but the pretraining "
                            f"split's labels are {data.task or 'absent'}; pretrain on a split with class labels.")
        self.task = data.task
        self.head = nn.Linear(encoder.num_features * cfg.grid**2, data.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, S, S) in [-1, 1] -> class logits (B, num_classes)."""
        return self.head(self.encoder.pooled(x, grid=self.cfg.grid))

    def forward_loss(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, C, S, S); labels as `label_loss` takes them -> loss, logits (B, K)."""
        logits = self(images)
        return {"loss": label_loss(logits.float(), labels, self.task), "logits": logits}

    def train_step(self, batch, ctx):
        with ctx.autocast():
            loss = self.forward_loss(batch["images"], batch["labels"])["loss"]
        ctx.update(loss)
        return {"loss": loss.detach()}
