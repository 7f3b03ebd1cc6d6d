"""Training a transfer model with its learning rate and epoch count chosen on a validation split.

The one selection loop of `finetune`, `segmentation` and `detection`: for each learning rate of
a log-spaced grid, train a fresh model on the fitting part, score the validation part after
every epoch and stop early, once the score has not improved for `patience` epochs (or at
`max_epochs`; detection first drops the rate 10x at such a plateau); keep the weights of the
best (learning rate, epoch). The test split is never seen. The chosen values go into the
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
CHECK_EVERY = 50  # training steps between two host reads of the losses' finiteness (each read waits for the GPU)


@dataclass
class Selected:
    model: nn.Module
    lr: float
    epochs: int
    val_score: float
    max_epochs: int  # the cap each learning rate ran under (raised for small sets by min_steps)
    # val_score minus the best validation score any other rate reached; nan with a single rate
    lr_margin: float = math.nan
    lr_drops: int = 0  # 10x drops of the rate made before the chosen epoch (detection's step decay)

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
    if n < 2:
        raise UserError(f"choosing a learning rate needs at least 2 training images (1 to train on, 1 to validate on), "
                        f"got {n}; evaluate on more images (a larger --limit).")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(val_fraction * n)))  # at least one image on each side
    rest = order[n_val:]
    return rest[: max(2, round(fraction * len(rest)))], order[:n_val]


def train_and_select(build: Callable[[], nn.Module], loss_fn: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
                     score_fn: Callable[[nn.Module, torch.Tensor], float], fit: torch.Tensor, val: torch.Tensor,
                     lrs: tuple[float, ...], max_epochs: int, patience: int, batch_size: int,
                     optimizer: Callable[..., torch.optim.Optimizer], seed: int, min_steps: int = 0,
                     val_every_steps: int = 1, decays: int = 0, warmup: bool = False) -> Selected:
    """build(): a fresh model (called after seeding); loss_fn(model, batch indices, generator): the
    training loss of a batch, a 0-dim tensor on the model's device; score_fn(model in eval mode,
    indices): validation score, higher is better; optimizer(parameters, lr=...): e.g.
    `functools.partial(torch.optim.Adam, weight_decay=1e-4)`.

    Each learning rate trains until its validation score has not improved for `patience`
    validations, for at most `max_epochs` epochs. Such a plateau first drops the rate 10x, up to
    `decays` times (detection's step decay), and the next plateau ends the run. With `min_steps`,
    a run never stops before that many steps (small labelled fractions have few steps per epoch:
    the cap rises to fit them, and `patience` after them). `warmup`: the rate rises linearly over
    the first epoch (torchvision's detection recipe). Validation runs after every epoch, or every
    few epochs where an epoch has fewer than `val_every_steps` steps (18 images at 1% of the labels
    make a 1-step epoch: scoring 200 validation images after each would cost most of the run);
    `patience` then counts validations, not epochs. A rate whose loss stops being finite ends there
    (too large for this model); when every rate does so before its first validation, one sentence
    says so.
    """
    batch_size = min(batch_size, len(fit))
    steps_per_epoch = len(fit) // batch_size
    every = -(-val_every_steps // steps_per_epoch)  # epochs between validations (1 when val_every_steps is 1)
    min_epochs = -(-min_steps // steps_per_epoch)
    if min_epochs:
        max_epochs = max(max_epochs, min_epochs + patience * every)
    best: Selected | None = None
    best_by_lr: dict[float, float] = {}
    for lr in lrs:
        torch.manual_seed(seed)
        model = build()
        opt = optimizer([p for p in model.parameters() if p.requires_grad], lr=lr)
        schedule = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=steps_per_epoch) if warmup else None
        gen = torch.Generator().manual_seed(seed)
        lr_best, stale, drops = float("-inf"), 0, 0  # stale: validations since this rate's best (or its last drop)
        for epoch in range(1, max_epochs + 1):
            model.train()
            order = fit[torch.randperm(len(fit), generator=gen)]
            if not train_epoch(model, opt, loss_fn, [order[i * batch_size : (i + 1) * batch_size]
                                                     for i in range(steps_per_epoch)], gen, schedule):
                break  # this rate diverged; its epochs validated before stay candidates
            if epoch % every and epoch != max_epochs:
                continue
            model.eval()
            with torch.no_grad():
                score = score_fn(model, val)
            if score > lr_best:
                lr_best, stale = score, 0
            else:
                stale += 1
            if best is None or score > best.val_score:
                # Weights only (no optimiser state): the copy the test split will see.
                best = Selected(copy.deepcopy(model), lr, epoch, score, max_epochs, lr_drops=drops)
            if stale < patience or epoch < min_epochs:
                continue
            if drops == decays:
                break
            drops, stale = drops + 1, 0
            for group in opt.param_groups:
                group["lr"] *= 0.1
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
                gen: torch.Generator, schedule: torch.optim.lr_scheduler.LRScheduler | None = None) -> bool:
    """One pass over `batches`; False when a loss was not finite (the rate diverged).

    The host reads the losses only every `CHECK_EVERY` steps and at the end of the epoch (on a
    GPU, each read waits for the queued work): until then a 0-dim flag on the model's device
    gathers whether every loss was finite. Steps taken after a non-finite loss change only this
    run's weights, which are dropped: the caller validates nothing of a diverged epoch.
    """
    finite = None
    for step, batch in enumerate(batches, 1):
        loss = loss_fn(model, batch, gen)
        ok = torch.isfinite(loss.detach())
        finite = ok if finite is None else finite & ok
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if schedule is not None:
            schedule.step()
        if (step % CHECK_EVERY == 0 or step == len(batches)) and not finite.item():
            return False
    return True
