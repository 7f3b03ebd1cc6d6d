"""Training a transfer model with its learning rate and epoch count chosen on a validation split.

Shared by `finetune` and `segmentation`: for each learning rate of a small grid, train a fresh
model for up to `epochs` epochs on the fitting part, score the validation part after every
epoch, and keep the weights of the best (learning rate, epoch). The test split is never seen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Selected:
    model: nn.Module
    lr: float
    epochs: int
    val_score: float


def carve_validation(n: int, fraction: float, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, val) of a seeded `fraction` of n labelled examples, `val_fraction` of it held out.

    Subsets of smaller fractions are nested in those of larger ones (one permutation per seed).
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    labelled = order[: max(2, round(fraction * n))]
    n_val = max(1, round(val_fraction * len(labelled)))
    return labelled[n_val:], labelled[:n_val]


def train_and_select(build: Callable[[], nn.Module], loss_fn: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
                     score_fn: Callable[[nn.Module, torch.Tensor], float], fit: torch.Tensor, val: torch.Tensor,
                     lrs: tuple[float, ...], epochs: int, batch_size: int, weight_decay: float, seed: int,
                     min_steps: int = 0) -> Selected:
    """build(): a fresh model (called after seeding); loss_fn(model, batch indices, generator): the
    training loss of a batch; score_fn(model in eval mode, indices): validation score, higher is better.

    Each learning rate trains max(epochs, enough epochs for `min_steps` steps) epochs with Adam.
    """
    batch_size = min(batch_size, len(fit))
    steps_per_epoch = max(1, len(fit) // batch_size)
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    best: Selected | None = None
    for lr in lrs:
        torch.manual_seed(seed)
        model = build()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(1, epochs + 1):
            model.train()
            order = fit[torch.randperm(len(fit), generator=gen)]
            for i in range(steps_per_epoch):
                loss = loss_fn(model, order[i * batch_size : (i + 1) * batch_size], gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                score = score_fn(model, val)
            if best is None or score > best.val_score:
                best = Selected(copy.deepcopy(model), lr, epoch, score)
    return best
