"""Linear probe: logistic regression on standardised frozen features.

Multinomial for single-label data (accuracy), one binary regression per class for multi-label
data (multi-hot labels; mean average precision). The L2 penalty is chosen on a validation split
carved from the training set (never on test), then the probe is refit on the whole training set
with the chosen penalty. With `stages`, every listed stage is probed in turn (the layer-wise
probe of the paper's follow-ups) and each metric is named `<metric>@<stage>`.

Before the features are extracted, the encoder's BatchNorm running statistics are recalibrated
on unmasked training images (`features.recalibrated`; a random initialisation's stay 0/1
otherwise). Features are extracted once per stage, held once per split (standardised in place,
the validation and fitting parts are views) and reused across the penalty grid. The
trivial reference `map_class_prior` (multi-label) or `accuracy_majority` (single-label) is
returned beside the score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.features import device_of, extract_features, recalibrated
from ctxenc.evaluators.finetune import trivial_reference
from ctxenc.evaluators.metrics import mean_average_precision


@dataclass(frozen=True)
class LinearProbeConfig:
    """stage: encoder stage to probe (None: the last); stages: probe each of these instead, metrics
    named `<metric>@<stage>`; grid: a stage's map is average-pooled to grid x grid."""

    target: ClassVar[str] = "labels"

    stage: str | None = None
    stages: tuple[str, ...] | None = None
    grid: int = 2
    weight_decays: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
    val_fraction: float = 0.1
    max_iter: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.stage is not None and self.stages is not None:
            raise UserError("a linear probe takes either 'stage' or 'stages', not both; list the stage in 'stages'.")


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    """Full-batch L-BFGS on the mean loss + weight_decay/2 * ||W||^2. x: (N, D).

    y: (N,) class indices (softmax cross-entropy) or (N, K) multi-hot (binary cross-entropy per
    class, summed over classes; entries of -1, VOC's "difficult only", do not count).
    """
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], num_classes, device=x.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = head(x)
        if y.dim() == 2:
            data_loss = F.binary_cross_entropy_with_logits(logits, y.clamp_min(0), weight=(y >= 0).float(),
                                                           reduction="sum") / len(y)
        else:
            data_loss = F.cross_entropy(logits, y)
        loss = data_loss + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def score(head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy for class indices y (N,), mean average precision for multi-hot y (N, K)."""
    with torch.no_grad():
        logits = head(x)
        if y.dim() == 2:
            return mean_average_precision(logits, y)
        return (logits.argmax(1) == y).float().mean().item()


def linear_probe(encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 cfg: LinearProbeConfig = LinearProbeConfig()) -> dict[str, float]:
    """train, test: (images (N, C, S, S) in [-1, 1] or `ModelInputs`, labels (N,) or multi-hot (N, K)).

    -> {metric, val_metric, weight_decay} with metric = accuracy or map; with `stages`, those
    three for each stage, suffixed `@<stage>`; and once `map_class_prior` or `accuracy_majority`.
    """
    encoder = recalibrated(encoder, train[0])
    results = trivial_reference(train[1], test[1])
    if cfg.stages is None:
        return {**results, **probe_stage(encoder, train, test, cfg.stage, cfg)}
    for stage in cfg.stages:
        results.update({f"{k}@{stage}": v for k, v in probe_stage(encoder, train, test, stage, cfg).items()})
    return results


def probe_stage(encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                stage: str | None, cfg: LinearProbeConfig) -> dict[str, float]:
    n_val = max(1, int(cfg.val_fraction * len(train[0])))
    if len(train[0]) - n_val < 2:  # the features are standardised with the fitting part's standard deviation
        raise UserError(f"a linear probe needs at least {n_val + 2} training images ({n_val} to validate on, 2 to fit), "
                        f"got {len(train[0])}; evaluate on more images (a larger --limit).")
    device = device_of(encoder)  # features, labels and the probe live where the encoder is (--device)
    # Each split's features are held once (N x D floats, evaluation's bulk of memory at 50,000
    # images) and standardised in place; the validation and fitting parts are views of x_train.
    x_train = extract_features(encoder, train[0], stage, cfg.grid).to(device)
    train_mean, train_std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)  # for the final fit
    # Validation split from train, seeded: the rows in the seeded order, the first n_val to validate
    # on. Reordered before the test features exist: its passing second copy is no new peak.
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    x_train, y_train = x_train[order], train[1].to(device)[order]
    x_test, y_test = extract_features(encoder, test[0], stage, cfg.grid).to(device), test[1].to(device)
    multi_label = y_train.dim() == 2
    metric = "map" if multi_label else "accuracy"
    num_classes = y_train.shape[1] if multi_label else int(max(y_train.max(), y_test.max())) + 1

    x_val, y_val, x_fit, y_fit = x_train[:n_val], y_train[:n_val], x_train[n_val:], y_train[n_val:]
    mean, std = x_fit.mean(0), x_fit.std(0).clamp_min(1e-6)  # statistics of the fitting part only
    x_train.sub_(mean).div_(std)
    scores = {}
    for wd in cfg.weight_decays:
        head = fit_logistic(x_fit, y_fit, num_classes, wd, cfg.max_iter)
        scores[wd] = score(head, x_val, y_val)
    best = max(cfg.weight_decays, key=lambda wd: (scores[wd], wd))  # ties: the stronger penalty

    # The final fit on all of train, standardised with the whole train's statistics: the values
    # restored, then standardised again (equal to standardising the features anew, up to rounding).
    x_train.mul_(std).add_(mean).sub_(train_mean).div_(train_std)
    head = fit_logistic(x_train, y_train, num_classes, best, cfg.max_iter)
    x_test.sub_(train_mean).div_(train_std)
    return {
        metric: score(head, x_test, y_test),
        f"val_{metric}": scores[best],
        "weight_decay": best,
    }
