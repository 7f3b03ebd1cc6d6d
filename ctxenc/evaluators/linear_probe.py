"""Linear probe: multinomial logistic regression on standardised frozen features.

The L2 penalty is chosen on a validation split carved from the training set (never on test),
then the probe is refit on the whole training set with the chosen penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ctxenc.encoders import Encoder
from ctxenc.evaluators.features import extract_features


@dataclass(frozen=True)
class LinearProbeConfig:
    """stage: encoder stage to probe (None: the last); grid: its map is average-pooled to grid x grid."""

    stage: str | None = None
    grid: int = 2
    weight_decays: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2)
    val_fraction: float = 0.1
    max_iter: int = 100
    seed: int = 0


def fit_logistic(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    """Full-batch L-BFGS on mean cross-entropy + weight_decay/2 * ||W||^2. x: (N, D), y: (N,)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def accuracy(head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (head(x).argmax(1) == y).float().mean().item()


def linear_probe(encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 cfg: LinearProbeConfig = LinearProbeConfig()) -> dict[str, float]:
    """train, test: (images (N, C, S, S) in [-1, 1], labels (N,)). -> {"accuracy", "val_accuracy", "weight_decay"}."""
    x_train = extract_features(encoder, train[0], cfg.stage, cfg.grid)
    x_test = extract_features(encoder, test[0], cfg.stage, cfg.grid)
    y_train, y_test = train[1], test[1]
    num_classes = int(max(y_train.max(), y_test.max())) + 1

    # Validation split from train, seeded; standardised with statistics of the fitting part only.
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(cfg.seed))
    n_val = max(1, int(cfg.val_fraction * len(x_train)))
    val, fit = order[:n_val], order[n_val:]
    mean, std = x_train[fit].mean(0), x_train[fit].std(0).clamp_min(1e-6)
    scores = {}
    for wd in cfg.weight_decays:
        head = fit_logistic((x_train[fit] - mean) / std, y_train[fit], num_classes, wd, cfg.max_iter)
        scores[wd] = accuracy(head, (x_train[val] - mean) / std, y_train[val])
    best = max(cfg.weight_decays, key=lambda wd: (scores[wd], wd))  # ties: the stronger penalty

    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    head = fit_logistic((x_train - mean) / std, y_train, num_classes, best, cfg.max_iter)
    return {
        "accuracy": accuracy(head, (x_test - mean) / std, y_test),
        "val_accuracy": scores[best],
        "weight_decay": best,
    }
