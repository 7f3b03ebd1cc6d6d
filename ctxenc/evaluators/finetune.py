"""Fine-tuning: the whole encoder plus a linear head, trained on a fraction of the labels.

As the paper's VOC07 classification: every layer is trained, starting from the pretrained
weights (or the random initialisation for `random`). Single-label data gives accuracy,
multi-label data (multi-hot labels) mean average precision. The learning rate and the number
of epochs are chosen on a validation split carved from the labelled training examples.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.metrics import mean_average_precision
from ctxenc.evaluators.selection import carve_validation, train_and_select


@dataclass(frozen=True)
class FinetuneConfig:
    """label_fractions: fractions of the training labels to fine-tune on, each reported as
    `<metric>@<percent>` (e.g. map@10%); lrs: the learning-rate grid (Adam); epochs: at most this
    many (the best epoch on validation is kept), but at least `min_steps` steps; grid: the last
    stage's map is average-pooled to grid x grid before the head; flip: random horizontal flips."""

    target: ClassVar[str] = "labels"

    label_fractions: tuple[float, ...] = (1.0,)
    lrs: tuple[float, ...] = (1e-3, 3e-3)
    epochs: int = 10
    min_steps: int = 150
    batch_size: int = 64
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    grid: int = 2
    flip: bool = True
    seed: int = 0

    def __post_init__(self):
        if not self.label_fractions or not all(0 < f <= 1 for f in self.label_fractions):
            raise UserError(f"label fractions must lie in (0, 1], got {self.label_fractions}.")
        if not self.lrs or self.epochs < 1 or not 0 < self.val_fraction < 1:
            raise UserError("finetune needs at least one learning rate, epochs >= 1 and a validation fraction in (0, 1).")


class Classifier(nn.Module):
    """encoder -> last stage (B, C, h, w) -> average-pooled to grid x grid -> linear -> logits (B, K)."""

    def __init__(self, encoder: Encoder, num_outputs: int, grid: int):
        super().__init__()
        self.encoder, self.grid = encoder, grid
        self.head = nn.Linear(encoder.num_features * grid * grid, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(self.encoder(x), self.grid).flatten(1))


def percent(fraction: float) -> str:
    """0.1 -> '10%': how label fractions appear in metric names."""
    return f"{fraction * 100:g}%"


def finetune(encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
             cfg: FinetuneConfig = FinetuneConfig()) -> dict[str, float]:
    """train, test: (images (N, C, S, S) in [-1, 1], labels (N,) class indices or (N, K) multi-hot).

    -> per label fraction p: {metric@p, val_metric@p, lr@p, epochs@p}, metric = map or accuracy.
    """
    images, labels = train
    multi_label = labels.dim() == 2
    metric = "map" if multi_label else "accuracy"
    num_outputs = labels.shape[1] if multi_label else int(max(labels.max(), test[1].max())) + 1

    device = next(encoder.parameters()).device  # batches go where the encoder is (--device)

    def loss_fn(model, idx, gen):
        x, y = images[idx], labels[idx]
        if cfg.flip:
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        logits = model(x.to(device))
        y = y.to(device)
        if multi_label:  # entries of -1 (VOC's "difficult only") do not count
            return F.binary_cross_entropy_with_logits(logits, y.clamp_min(0), weight=(y >= 0).float())
        return F.cross_entropy(logits, y)

    def score(model, x, y):
        logits = torch.cat([model(x[i : i + 500].to(device)).cpu() for i in range(0, len(x), 500)])
        if multi_label:
            return mean_average_precision(logits, y)
        return (logits.argmax(1) == y).float().mean().item()

    results = {}
    for fraction in cfg.label_fractions:
        fit, val = carve_validation(len(images), fraction, cfg.val_fraction, cfg.seed)
        chosen = train_and_select(
            build=lambda: Classifier(copy.deepcopy(encoder), num_outputs, cfg.grid),
            loss_fn=loss_fn, score_fn=lambda model, idx: score(model, images[idx], labels[idx]),
            fit=fit, val=val, lrs=cfg.lrs, epochs=cfg.epochs, batch_size=cfg.batch_size,
            weight_decay=cfg.weight_decay, seed=cfg.seed, min_steps=cfg.min_steps,
        )
        with torch.no_grad():
            test_score = score(chosen.model.eval(), *test)
        p = percent(fraction)
        results.update({f"{metric}@{p}": test_score, f"val_{metric}@{p}": chosen.val_score,
                        f"lr@{p}": chosen.lr, f"epochs@{p}": float(chosen.epochs)})
    return results
