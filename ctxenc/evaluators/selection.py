"""Training a transfer model with its learning rate and epoch count chosen on a validation split.

Shared by `finetune` and `segmentation`: for each learning rate of a log-spaced grid, train a
fresh model on the fitting part, score the validation part after every epoch and stop early,
once the score has not improved for `patience` epochs (or at `max_epochs`); keep the weights of
the best (learning rate, epoch). The test split is never seen. The chosen values go into the
metrics beside the grid's bounds, so a report can flag a choice on an edge of the grid (the
grid is then too narrow) or at the cap (the cap is too low), with the chosen rate's margin on
validation over the best other rate (a small one says the rates nearly tie).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ctxenc.errors import UserError

DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


@dataclass
class Selected:
    model: nn.Module
    lr: float
    epochs: int
    val_score: float
    max_epochs: int  # the cap each learning rate ran under (raised for small sets by min_steps)
    # val_score minus the best validation score any other rate reached; nan with a single rate
    lr_margin: float = math.nan

    def metrics(self, lrs: tuple[float, ...], suffix: str = "") -> dict[str, float]:
        """{lr, lr_min, lr_max, epochs, max_epochs, lr_margin (when there is one)}, each name
        followed by `suffix` (e.g. '@10%')."""
        values = {"lr": self.lr, "lr_min": min(lrs), "lr_max": max(lrs), "epochs": float(self.epochs),
                  "max_epochs": float(self.max_epochs)}
        if not math.isnan(self.lr_margin):
            values["lr_margin"] = self.lr_margin
        return {f"{k}{suffix}": v for k, v in values.items()}


def check_schedule(lrs: tuple[float, ...], max_epochs: int, patience: int, what: str) -> None:
    """One sentence for a grid or schedule that cannot work."""
    if not lrs or min(lrs) <= 0:
        raise UserError(f"{what} needs at least one learning rate, all positive, got {list(lrs)}.")
    if max_epochs < 1 or patience < 1:
        raise UserError(f"{what} needs max_epochs >= 1 and patience >= 1, got {max_epochs} and {patience}.")


def carve_validation(n: int, fraction: float, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, val): a seeded `val_fraction` of the n labelled examples is held out for
    validation, the same for every label fraction, and `fraction` of the rest is trained on.

    A validation set carved from the fraction itself would be 2 images at 1% of 2,000: selection
    would be noise. Training subsets of smaller fractions are nested in those of larger ones (one
    permutation per seed); the test split is never seen.
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(val_fraction * n))
    rest = order[n_val:]
    return rest[: max(2, round(fraction * len(rest)))], order[:n_val]


def train_and_select(build: Callable[[], nn.Module], loss_fn: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
                     score_fn: Callable[[nn.Module, torch.Tensor], float], fit: torch.Tensor, val: torch.Tensor,
                     lrs: tuple[float, ...], max_epochs: int, patience: int, batch_size: int, weight_decay: float,
                     seed: int, min_steps: int = 0, val_every_steps: int = 1) -> Selected:
    """build(): a fresh model (called after seeding); loss_fn(model, batch indices, generator): the
    training loss of a batch; score_fn(model in eval mode, indices): validation score, higher is better.

    Each learning rate trains with Adam until its validation score has not improved for
    `patience` epochs, for at most `max_epochs` epochs, and never stops before `min_steps`
    steps (small labelled fractions have few steps per epoch: the cap rises to fit them).
    Validation runs after every epoch, or every few epochs where an epoch has fewer than
    `val_every_steps` steps (18 images at 1% of the labels make a 1-step epoch: scoring 200
    validation images after each would cost most of the run); `patience` then counts
    validations, not epochs. A rate whose loss stops being finite ends there (too large for this
    model); when every rate does so before its first validation, one sentence says so.
    """
    batch_size = min(batch_size, len(fit))
    steps_per_epoch = max(1, len(fit) // batch_size)
    every = -(-val_every_steps // steps_per_epoch)  # epochs between validations (1 when val_every_steps is 1)
    min_epochs = -(-min_steps // steps_per_epoch)
    max_epochs = max(max_epochs, min_epochs + patience * every)
    best: Selected | None = None
    best_by_lr: dict[float, float] = {}
    for lr in lrs:
        torch.manual_seed(seed)
        model = build()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
        gen = torch.Generator().manual_seed(seed)
        lr_best, lr_best_epoch = float("-inf"), 0
        for epoch in range(1, max_epochs + 1):
            model.train()
            order = fit[torch.randperm(len(fit), generator=gen)]
            if not train_epoch(model, opt, loss_fn, [order[i * batch_size : (i + 1) * batch_size]
                                                     for i in range(steps_per_epoch)], gen):
                break  # this rate diverged; its epochs validated before stay candidates
            if epoch % every and epoch != max_epochs:
                continue
            model.eval()
            with torch.no_grad():
                score = score_fn(model, val)
            if score > lr_best:
                lr_best, lr_best_epoch = score, epoch
            if best is None or score > best.val_score:
                # Weights only (no optimiser state): the copy the test split will see.
                best = Selected(copy.deepcopy(model), lr, epoch, score, max_epochs)
            if epoch - lr_best_epoch >= patience * every and epoch >= min_epochs:
                break
        if lr_best > float("-inf"):
            best_by_lr[lr] = lr_best
    if best is None:
        raise UserError(f"training diverged (a non-finite loss) before its first validation at every learning rate "
                        f"of {list(lrs)}; try smaller ones.")
    best.lr_margin = margin(best_by_lr, best.lr)
    return best


def margin(best_by_lr: dict[float, float], chosen: float) -> float:
    """The chosen rate's best validation score minus the best any other rate reached (rates that
    never validated are absent); nan when no other rate validated."""
    others = [score for lr, score in best_by_lr.items() if lr != chosen]
    return best_by_lr[chosen] - max(others) if others else math.nan


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, loss_fn, batches: list[torch.Tensor],
                gen: torch.Generator) -> bool:
    """One pass over `batches`; False as soon as a loss is not finite (the rate diverged), before
    that loss can poison the weights."""
    for batch in batches:
        loss = loss_fn(model, batch, gen)
        if not torch.isfinite(loss):
            return False
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return True
