"""Training a transfer model with its learning rate and epoch count chosen on a validation split.

The one selection loop of `finetune`, `segmentation` and `detection`. Each learning rate of a
log-spaced grid trains a fresh model on the fitting part, scores the validation part after
every epoch and stops early, once the score has not improved for `patience` validations (or at
`max_epochs`; detection first drops the rate 10x at such a plateau); the weights of the best
(learning rate, epoch) are kept. The test split is never seen. Two ways to run the grid, one
result rule:

- `grid`: every rate trains to its own stop, one after the other (`train_and_select`).
- `halving` (successive halving, Jamieson & Talwalkar 2016): every rate trains for a first rung of
  validations, the better half by best validation score so far goes on to twice that many, and
  so on until one is left, which trains to its own stop. It picks what the grid picks whenever
  the grid's winner is never in the worse half at a cut; the cut rates cost only their rungs.

Either way can run with heads in one pass (`train_heads_and_select`, for a frozen encoder): one
head per rate, all trained on the same batches of the same frozen features, each validated and
stopped on its own, as DINOv2's linear evaluation; the features of a batch are computed once for
all heads, and halving's cut heads stop training at their rung.

Each rate's run keeps its own model, optimizer, batch-order generator and global random state
(torch's, which e.g. torchvision's detection sampling draws from), all seeded as the grid seeds
them: a rate trains the same weights whichever way the grid runs, so halving and heads-in-one-
pass choose what the sequential grid chooses, up to the rates halving cuts. The chosen values
go into the metrics beside the grid's bounds, so a report can flag a choice on an edge of the
grid (the grid is then too narrow) or at the cap (the cap is too low), with the chosen rate's
margin on validation over the best other rate (a small one says the rates nearly tie; a rate
cut by halving counts with its best score before the cut).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ctxenc.errors import UserError

DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
SELECTIONS = ("grid", "halving")
DEFAULT_SELECTION = "halving"  # measured: benchmarks/selection_agreement.py
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


def check_schedule(lrs: tuple[float, ...], max_epochs: int, patience: int, what: str, selection: str = "grid") -> None:
    """One sentence for a grid, schedule or selection that cannot work."""
    if not lrs or min(lrs) <= 0:
        raise UserError(f"{what} needs at least one learning rate, all positive, got {list(lrs)}.")
    if max_epochs < 1 or patience < 1:
        raise UserError(f"{what} needs max_epochs >= 1 and patience >= 1, got {max_epochs} and {patience}.")
    if selection not in SELECTIONS:
        raise UserError(f"{what}'s selection must be one of {', '.join(SELECTIONS)}, got {selection!r}.")


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


@dataclass(frozen=True)
class Schedule:
    """When a run validates and stops: `every` epochs between validations, no stop before
    `min_epochs`, at most `max_epochs`, `patience` validations without a better score drop the
    rate 10x up to `decays` times and then stop the run."""

    steps_per_epoch: int
    batch_size: int
    every: int
    min_epochs: int
    max_epochs: int
    patience: int
    decays: int
    warmup: bool

    @classmethod
    def of(cls, n_fit: int, batch_size: int, max_epochs: int, patience: int, min_steps: int, val_every_steps: int,
           decays: int, warmup: bool) -> Schedule:
        batch_size = min(batch_size, n_fit)
        steps_per_epoch = n_fit // batch_size
        every = -(-val_every_steps // steps_per_epoch)  # epochs between validations (1 when val_every_steps is 1)
        min_epochs = -(-min_steps // steps_per_epoch)
        if min_epochs:
            max_epochs = max(max_epochs, min_epochs + patience * every)
        return cls(steps_per_epoch, batch_size, every, min_epochs, max_epochs, patience, decays, warmup)

    def batches(self, fit: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        """One epoch's batches of `fit` indices, in the order `gen` draws (the rest of a shuffled epoch dropped)."""
        order = fit[torch.randperm(len(fit), generator=gen)]
        return [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.steps_per_epoch)]

    def validates_after(self, epoch: int) -> bool:
        return epoch % self.every == 0 or epoch == self.max_epochs


def _global_random_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_global_random_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class Run:
    """One learning rate's training, which can pause between validations and resume: its model
    (built after seeding torch with `seed`), optimizer, warm-up, batch-order generator (seeded
    with `seed`) and torch's global random state are its own."""

    def __init__(self, lr: float, build: Callable[[], nn.Module], optimizer: Callable[..., torch.optim.Optimizer],
                 seed: int, schedule: Schedule):
        torch.manual_seed(seed)
        self.model = build()
        self.device = next(self.model.parameters()).device
        self.lr, self.schedule = lr, schedule
        self.opt = optimizer([p for p in self.model.parameters() if p.requires_grad], lr=lr)
        self.warmup = (torch.optim.lr_scheduler.LinearLR(self.opt, start_factor=1e-3, total_iters=schedule.steps_per_epoch)
                       if schedule.warmup else None)
        self.gen = torch.Generator().manual_seed(seed)
        self.random_state = _global_random_state(self.device)
        self.epoch = self.validations = self.stale = self.drops = 0  # stale: validations since the best (or the last drop)
        self.best: Selected | None = None  # a copy of the best epoch's weights (no optimiser state), for the test split
        self.best_score = float("-inf")
        self.done = False
        self.finite: torch.Tensor | None = None  # whether every loss since the last check was finite, on the device

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer step on `loss`, a 0-dim tensor; its finiteness gathered on the device, not read."""
        ok = torch.isfinite(loss.detach())
        self.finite = ok if self.finite is None else self.finite & ok
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.warmup is not None:
            self.warmup.step()

    def diverged(self) -> bool:
        """A host read: whether a loss since the last check was not finite. Such a run is done: steps
        taken after that loss change only weights no validation sees."""
        finite, self.finite = self.finite, None
        if finite is not None and not finite.item():
            self.done = True
        return self.done

    def validated(self, score: float) -> None:
        """Book the validation `score` of the epoch just trained: keep its weights if best, count a
        plateau, drop the rate or stop."""
        self.validations += 1
        if score > self.best_score:
            self.best_score, self.stale = score, 0
            self.best = Selected(copy.deepcopy(self.model), self.lr, self.epoch, score, self.schedule.max_epochs,
                                 lr_drops=self.drops)
        else:
            self.stale += 1
        s = self.schedule
        if self.epoch == s.max_epochs:
            self.done = True
        elif self.stale >= s.patience and self.epoch >= s.min_epochs:
            if self.drops == s.decays:
                self.done = True
            else:
                self.drops, self.stale = self.drops + 1, 0
                for group in self.opt.param_groups:
                    group["lr"] *= 0.1

    def advance(self, validations: int | float, loss_fn, score_fn, fit: torch.Tensor, val: torch.Tensor) -> None:
        """Train until this run has made `validations` validations in all, or is done."""
        _set_global_random_state(self.random_state, self.device)
        while not self.done and self.validations < validations:
            self.epoch += 1
            self.model.train()
            batches = self.schedule.batches(fit, self.gen)
            for step, batch in enumerate(batches, 1):
                self.step(loss_fn(self.model, batch, self.gen))
                if (step % CHECK_EVERY == 0 or step == len(batches)) and self.diverged():
                    break
            if self.done or not self.schedule.validates_after(self.epoch):
                continue
            self.model.eval()
            with torch.no_grad():
                self.validated(score_fn(self.model, val))
        self.random_state = _global_random_state(self.device)

    def release(self) -> None:
        """Drop the weights (a rate that lost): only its best score stays."""
        self.model = self.opt = self.warmup = self.best = None


def train_and_select(build: Callable[[], nn.Module], loss_fn: Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor],
                     score_fn: Callable[[nn.Module, torch.Tensor], float], fit: torch.Tensor, val: torch.Tensor,
                     lrs: tuple[float, ...], max_epochs: int, patience: int, batch_size: int,
                     optimizer: Callable[..., torch.optim.Optimizer], seed: int, min_steps: int = 0,
                     val_every_steps: int = 1, decays: int = 0, warmup: bool = False, selection: str = "grid",
                     first_rung: int | None = None) -> Selected:
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

    selection: "grid" trains every rate to its stop, one after the other (one model in memory at a
    time); "halving" keeps the rates' models side by side and cuts the worse half after a rung of
    `first_rung` validations (default: `first_rung_validations`), then after twice as many, and so
    on (see the module's docstring).
    """
    schedule = Schedule.of(len(fit), batch_size, max_epochs, patience, min_steps, val_every_steps, decays, warmup)

    def start(lr):
        return Run(lr, build, optimizer, seed, schedule)

    if selection == "grid":
        runs, best = [], None
        for lr in lrs:
            run = start(lr)
            run.advance(math.inf, loss_fn, score_fn, fit, val)
            if run.best is not None and (best is None or run.best_score > best.best_score):
                if best is not None:
                    best.release()
                best = run
            else:
                run.release()
            runs.append(run)
    else:
        runs = [start(lr) for lr in lrs]
        alive, rung = list(runs), first_rung or first_rung_validations(schedule)
        while len(alive) > 1 and not all(run.done for run in alive):
            for run in alive:
                run.advance(rung, loss_fn, score_fn, fit, val)
            alive, rung = _halved(alive), rung * 2
        if len(alive) == 1:  # the last one trains to its own stop, as in the grid
            alive[0].advance(math.inf, loss_fn, score_fn, fit, val)
    return _chosen(runs, lrs)


def first_rung_validations(schedule: Schedule) -> int:
    """Halving's first rung: twice `patience` validations, and at least the validations within the
    `min_steps` every run trains (a rate cannot be judged before the grid would let it stop)."""
    return max(2 * schedule.patience, -(-schedule.min_epochs // schedule.every))


def _halved(alive: list[Run]) -> list[Run]:
    """Halving's cut: the better half of `alive` (rounded up) by best validation score so far, in
    the grid's order; a rate finished by itself ranks with its best score. The rest are released."""
    ranked = sorted(alive, key=lambda run: -run.best_score)  # stable: a tie keeps the grid's order
    kept = ranked[: -(-len(alive) // 2)]
    for run in alive:
        if run not in kept:
            run.release()
    return [run for run in alive if run in kept]


def train_heads_and_select(build: Callable[[], nn.Module], batch_fn: Callable[[torch.Tensor, torch.Generator], Any],
                           loss_fn: Callable[[nn.Module, Any], torch.Tensor],
                           score_fn: Callable[[list[nn.Module], torch.Tensor], list[float]], fit: torch.Tensor,
                           val: torch.Tensor, lrs: tuple[float, ...], max_epochs: int, patience: int, batch_size: int,
                           optimizer: Callable[..., torch.optim.Optimizer], seed: int, min_steps: int = 0,
                           val_every_steps: int = 1, decays: int = 0, warmup: bool = False, selection: str = "grid",
                           first_rung: int | None = None) -> Selected:
    """`train_and_select` for heads on a frozen encoder, every rate in one pass.

    build(): a fresh head (called after seeding, as the grid builds each rate's model: every head
    starts from the grid's weights); batch_fn(batch indices, generator): what every head trains on
    in that step (frozen features, targets, drawn flips), computed once a step; loss_fn(head, batch):
    its training loss, a 0-dim tensor; score_fn(heads in eval mode, indices): their validation
    scores, higher is better (the validation features computed once for all).

    The batches come from one generator seeded as each run of the grid seeds its own, and a
    head's updates and random draws are its own (an optimizer each, torch's global random state
    switched per head), so each head trains the weights its sequential run would, batch order
    included. A head whose run stops (patience, cap, divergence) stops updating; the pass ends when
    all have stopped. selection: "grid" trains every head to its stop, and the choice is the grid's;
    "halving" cuts the worse half of the heads (`_halved`, as `train_and_select` cuts) each time
    they reach a rung of validations (`first_rung`, then twice as many, ...), the cut heads stop
    there, and the choice is `train_and_select`'s halving's. Both up to float effects on a GPU.
    """
    schedule = Schedule.of(len(fit), batch_size, max_epochs, patience, min_steps, val_every_steps, decays, warmup)
    runs = [Run(lr, build, optimizer, seed, schedule) for lr in lrs]
    alive, rung = list(runs), first_rung or first_rung_validations(schedule)  # alive: the heads halving has not cut
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(1, schedule.max_epochs + 1):
        active = [run for run in alive if not run.done]
        if not active:
            break
        for run in active:
            run.epoch = epoch
            run.model.train()
        batches = schedule.batches(fit, gen)
        for step, idx in enumerate(batches, 1):
            batch = batch_fn(idx, gen)
            for run in active:
                if run.done:
                    continue
                _set_global_random_state(run.random_state, run.device)
                run.step(loss_fn(run.model, batch))
                run.random_state = _global_random_state(run.device)
                if step % CHECK_EVERY == 0 or step == len(batches):
                    run.diverged()
        validating = [run for run in active if not run.done]
        if not validating or not schedule.validates_after(epoch):
            continue
        for run in validating:
            run.model.eval()
        with torch.no_grad():
            scores = score_fn([run.model for run in validating], val)
        for run, score in zip(validating, scores):
            run.validated(score)
        # The heads still training have all validated as often (every validating epoch so far): the rung is reached
        # together, where train_and_select's halving would pause each of them.
        if selection == "halving" and len(alive) > 1 and all(run.done or run.validations >= rung for run in alive):
            alive, rung = _halved(alive), rung * 2
    return _chosen(runs, lrs)


def _chosen(runs: list[Run], lrs: tuple[float, ...]) -> Selected:
    """The best validated (rate, epoch), the first rate of the grid on a tie, with its margin."""
    validated = [run for run in runs if run.best_score > float("-inf")]
    if not validated:
        raise UserError(f"training diverged (a non-finite loss) before its first validation at every learning rate "
                        f"of {list(lrs)}; try smaller ones.")
    winner = max(validated, key=lambda run: run.best_score)  # max keeps the first of equals
    best = winner.best
    best.lr_margin = margin({run.lr: run.best_score for run in validated}, winner.lr)
    return best


def margin(best_by_lr: dict[float, float], chosen: float) -> float:
    """The chosen rate's best validation score minus the best any other rate reached (rates that
    never validated are absent); nan when no other rate validated."""
    others = [score for lr, score in best_by_lr.items() if lr != chosen]
    return best_by_lr[chosen] - max(others) if others else math.nan
