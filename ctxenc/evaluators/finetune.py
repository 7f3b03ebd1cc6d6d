"""Fine-tuning: the whole encoder plus a linear head, trained on a fraction of the labels.

As the paper's VOC07 classification: every layer is trained, starting from the pretrained
weights (or the random initialisation for `random`). Single-label data gives accuracy,
multi-label data (multi-hot labels) mean average precision. The learning rate (a log-spaced
grid) and the epoch (early stopping with patience) are chosen on a validation split carved from
the labelled training examples; the chosen values and the grid's bounds are returned. The grid
runs as `selection` says: `grid` (every rate to its own stop) or `halving` (successive halving:
the worse half of the rates cut after a first rung of validations, and so on; see
`selection.py`).

Trivial references beside the score: `map_class_prior` (constant scores, the training class
prior: each class's AP is then its positive rate on test) or `accuracy_majority` (always the
most frequent training class). A method that does not beat them has learnt nothing usable.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.features import batched, device_of
from ctxenc.evaluators.metrics import INTERPOLATIONS, mean_average_precision
from ctxenc.evaluators.selection import DEFAULT_LRS, DEFAULT_SELECTION, carve_validation, check_schedule, train_and_select


@dataclass(frozen=True)
class FinetuneConfig:
    """label_fractions: fractions of the training labels to fine-tune on, each reported as
    `<metric>@<percent>` (e.g. map@10%); lrs: the learning-rate grid (Adam); each learning rate
    trains until the validation score has not improved for `patience` epochs, at most `max_epochs`
    (the best epoch is kept), and at least `min_steps` steps; val_every_steps: validate every
    epoch, or every few epochs where an epoch is shorter than this many steps; grid: the last stage's map is
    average-pooled to grid x grid before the head; flip: random horizontal flips; selection: how the
    learning-rate grid runs, `grid` or `halving`."""

    target: ClassVar[str] = "labels"

    label_fractions: tuple[float, ...] = (1.0,)
    lrs: tuple[float, ...] = DEFAULT_LRS
    max_epochs: int = 60
    patience: int = 5
    min_steps: int = 150
    val_every_steps: int = 1
    batch_size: int = 64
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    grid: int = 2
    flip: bool = True
    ap: str = "area"  # multi-label AP: "area" (scikit-learn's, non-interpolated) or "11point" (the VOC2007 devkit's)
    selection: str = DEFAULT_SELECTION
    seed: int = 0

    def __post_init__(self):
        if not self.label_fractions or not all(0 < f <= 1 for f in self.label_fractions):
            raise UserError(f"label fractions must lie in (0, 1], got {self.label_fractions}.")
        check_schedule(self.lrs, self.max_epochs, self.patience, "finetune", self.selection)
        if self.val_every_steps < 1:
            raise UserError(f"finetune's val_every_steps must be at least 1, got {self.val_every_steps}.")
        if not 0 < self.val_fraction < 1:
            raise UserError(f"finetune needs a validation fraction in (0, 1), got {self.val_fraction}.")
        if self.ap not in INTERPOLATIONS:
            raise UserError(f"finetune's ap must be one of {', '.join(INTERPOLATIONS)}, got {self.ap!r}.")


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
    """train, test: (images (N, C, S, S) in [-1, 1] or `ModelInputs`, labels (N,) class indices or (N, K) multi-hot).

    -> per label fraction p: {metric@p, val_metric@p, lr@p, lr_min@p, lr_max@p, epochs@p,
    max_epochs@p}, metric = map or accuracy; and once the trivial reference `map_class_prior`
    or `accuracy_majority`.
    """
    images, labels = train
    multi_label = labels.dim() == 2
    metric = "map" if multi_label else "accuracy"
    num_outputs = labels.shape[1] if multi_label else int(max(labels.max(), test[1].max())) + 1

    device = device_of(encoder)  # the model, its batches, flips and targets go where the encoder is (--device)

    def loss_fn(model, idx, gen):
        x, y = images[idx].to(device), labels[idx].to(device)
        if cfg.flip:  # drawn on the CPU from the run's seeded generator, applied on the device
            flip = (torch.rand(len(x), generator=gen) < 0.5).to(device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        logits = model(x)
        if multi_label:  # entries of -1 (VOC's "difficult only") do not count
            return F.binary_cross_entropy_with_logits(logits, y.clamp_min(0), weight=(y >= 0).float())
        return F.cross_entropy(logits, y)

    def score(model, x, y):
        logits = batched(model, x, 500, device)
        if multi_label:
            return mean_average_precision(logits, y, interpolation=cfg.ap)
        return (logits.argmax(1) == y).float().mean().item()

    results = trivial_reference(labels, test[1], cfg.ap)
    for fraction in cfg.label_fractions:
        fit, val = carve_validation(len(images), fraction, cfg.val_fraction, cfg.seed)
        chosen = train_and_select(
            build=lambda: Classifier(copy.deepcopy(encoder), num_outputs, cfg.grid).to(device),
            loss_fn=loss_fn, score_fn=lambda model, idx: score(model, images[idx], labels[idx]),
            fit=fit, val=val, lrs=cfg.lrs, max_epochs=cfg.max_epochs, patience=cfg.patience,
            batch_size=cfg.batch_size, optimizer=functools.partial(torch.optim.Adam, weight_decay=cfg.weight_decay),
            seed=cfg.seed, min_steps=cfg.min_steps,
            val_every_steps=cfg.val_every_steps, selection=cfg.selection,
        )
        p = percent(fraction)
        results.update({f"{metric}@{p}": score(chosen.model.eval(), *test), f"val_{metric}@{p}": chosen.val_score,
                        **chosen.metrics(cfg.lrs, f"@{p}")})
    return results


def trivial_reference(train_labels: torch.Tensor, test_labels: torch.Tensor, ap: str = "area") -> dict[str, float]:
    """The score of a classifier that ignores the image. Multi-hot labels (N, K) -> {map_class_prior}:
    constant scores (the training class prior; being constant, each class's AP is its positive rate
    on test); class indices (N,) -> {accuracy_majority}: always the most frequent training class."""
    if train_labels.dim() == 2:
        prior = (train_labels == 1).float().mean(0)
        return {"map_class_prior": mean_average_precision(prior.expand(len(test_labels), -1), test_labels, interpolation=ap)}
    majority = torch.bincount(train_labels).argmax()
    return {"accuracy_majority": (test_labels == majority).float().mean().item()}
