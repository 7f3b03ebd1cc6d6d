"""What a pretext method is: one class, registered by name, that owns its whole training step.

A pretext (after MAE's "the model owns its loss" and timm's `@register_model`) declares:

- `Config`: a frozen dataclass of its own options, validated in its `__post_init__`;
- `__init__(encoder, cfg, data)`: the encoder plus whatever it trains through (decoder, heads,
  discriminator); `data` says what the pretraining data looks like (`PretrainData`);
- `optimizers(train)`: {name: optimizer} over its parameters;
- `train_step(batch, ctx)`: one step, backward and optimizer updates included (through
  `ctx.update(loss, optimizer_name)`, which knows AMP, multi-process gradients and the finite check); returns the
  scalar metrics to log;
- `label(cfg)`: the method's name in records, tables and run folders. Every option that differs
  from its default appears in it, so two rows of a suite never share a label by accident;
- `descriptors(cfg)`: the extra record columns (`mask`, `loss`).

The training loop in `ctxenc.engine` knows none of them by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

from ctxenc import distributed
from ctxenc.device import autocast
from ctxenc.encoders import Encoder
from ctxenc.errors import UserError


@dataclass(frozen=True)
class PretrainData:
    """What a pretext may know of its data: fill (C,) the per-channel mean in [-1, 1] (hides
    pixels), num_classes and task of the labels (None for unlabelled data)."""

    fill: torch.Tensor
    num_classes: int | None = None
    task: str | None = None


class TrainingDiverged(UserError):
    """The loss stopped being finite."""


class StepContext:
    """What a train step may use beyond its batch: AMP, randomness for the global batch, updates.

    One per training run; `step` is set by the loop before each call. Nothing here reads a value
    on the host: on a GPU a step queues its kernels and moves on, and the loop reads the losses
    and the divergence check once per log line (`health`, `check`).
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], device: torch.device, amp: bool,
                 generator: torch.Generator, global_batch: int, scaler: torch.amp.GradScaler, snapshot_path,
                 device_generator: torch.Generator | None = None):
        self.optimizers, self.device, self.amp, self.generator = optimizers, device, amp, generator
        # Draws made on the training device itself (masks): the run's generator on the CPU (so CPU
        # runs draw exactly what they always did), a generator of the GPU's own on CUDA; None where
        # the device has no generator (the meta device of the tests): then drawn on the CPU and copied.
        self.device_generator = generator if device.type == "cpu" and device_generator is None else device_generator
        self.global_batch, self.scaler, self.snapshot_path = global_batch, scaler, snapshot_path
        self.step = 0
        world = distributed.world_size()
        local = global_batch // world
        self.mine = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
        self.syncs = {name: distributed.gradient_sync(p for group in opt.param_groups for p in group["params"])
                      for name, opt in optimizers.items()}
        # The first non-finite loss, kept on the device: the step it came at (-1: none yet), which
        # loss (an index into `watched`) and its value.
        self.watched: list[str] = []
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.int64, device=device)
        self.bad_value = torch.zeros((), dtype=torch.float32, device=device)

    def autocast(self):
        """Mixed precision where --amp asks for it (float16 on CUDA, bfloat16 on the CPU)."""
        return autocast(self.device, self.amp)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A CPU tensor onto the training device without waiting for it: on CUDA, copied from pinned
        memory with non_blocking (a copy from pageable memory would wait for the queued kernels)."""
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x.to(self.device, non_blocking=True)

    def draw(self, sample: Callable[[int, torch.Generator], torch.Tensor]) -> torch.Tensor:
        """Random per-example data (masks, rotations, patch positions) for this process's slice.

        `sample(n, generator)` draws for the whole global batch on every process, so each process's
        slice is exactly what a single process would use for those images (same masks with 1 or N
        processes); the slice is then moved to the training device.
        """
        return self.to_device(sample(self.global_batch, self.generator)[self.mine])

    def draw_on_device(self, sample: Callable[..., torch.Tensor]) -> torch.Tensor:
        """Like `draw`, but drawn where the model trains: `sample(n, generator, device=, rows=)`
        draws for the whole global batch from `generator` (so every process's generator advances
        alike) and builds only this process's `rows` on `device` (`ctxenc.masks.sample_masks`)."""
        if self.device_generator is None:
            return self.draw(sample)
        return sample(self.global_batch, self.device_generator, device=self.device, rows=self.mine)

    def update(self, loss: torch.Tensor, optimizer: str = "model", what: str = "loss") -> None:
        """Backpropagate `loss` and step the optimizer named `optimizer`, with its gradients averaged
        over processes and scaled for float16. From the first non-finite loss on (on any process)
        every update is skipped, on the device (under float16 loss scaling, the scaler skips each
        step whose gradients are not finite), and the loop stops at its next host read (`check`).

        Under torchrun, every parameter of `optimizer` must get a gradient from `loss` (PyTorch's
        DDP stops with an error naming the parameters that did not)."""
        self.watch(distributed.mean({"x": loss})["x"], what)
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        # Scaled gradients are averaged (every process has the same scale), then unscaled.
        self.syncs[optimizer](self.scaler.scale(loss)).backward()
        if self.scaler.is_enabled():  # the scaler skips steps whose gradients are not finite
            self.scaler.unscale_(opt)
            self.scaler.step(opt)
        else:
            step_unless(opt, self.bad_step >= 0)

    def watch(self, loss: torch.Tensor, what: str) -> None:
        """Remember the first step whose `loss` (a scalar, the same on every process) is not finite."""
        if what not in self.watched:
            self.watched.append(what)
        first = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step = torch.where(first, self.step, self.bad_step)
        self.bad_loss = torch.where(first, self.watched.index(what), self.bad_loss)
        self.bad_value = torch.where(first, loss.detach().float(), self.bad_value)

    def health(self) -> torch.Tensor:
        """(3,) float64 on the device, for the loop's host read: 1 + the first bad step (0: none),
        which loss and its value."""
        return torch.stack([self.bad_step.double() + 1, self.bad_loss.double(), self.bad_value.double()])

    def check(self, health: list[float]) -> None:
        """Raise `TrainingDiverged` if `health` (read from `health()`) names a non-finite loss."""
        after, which, value = health
        if after > 0:
            raise TrainingDiverged(
                f"the {self.watched[int(which)]} became {value} at step {int(after) - 1}; training stopped (lower --lr); "
                f"the last good snapshot, if any, is kept as {self.snapshot_path}."
            )


def step_unless(opt: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """`opt.step()`, skipped where the bool scalar `skip` holds. A fused optimizer (`adam` below) reads
    the flag on the device, through the `found_inf` attribute GradScaler hands it the same way, and
    leaves weights, moments and step count untouched; any other optimizer reads it on the host."""
    if not opt.defaults.get("fused"):
        if not skip.item():
            opt.step()
        return
    opt.grad_scale, opt.found_inf = None, skip.float()
    try:
        opt.step()
    finally:
        del opt.grad_scale, opt.found_inf


def adam(params, lr: float, beta1: float) -> torch.optim.Adam:
    """Adam as the paper's code (beta2 0.999), fused: one kernel over all parameters instead of a
    loop of small ones (measured 1.2x on the paper's inpainting model, whose two 32.8M-parameter
    layers made the unfused update cost about 1.5 s per step on 2 CPU cores); it also skips a
    diverged step on the device (`step_unless`)."""
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), fused=True)


class Pretext(nn.Module):
    """Base of every pretext: `self.encoder` is what evaluators get; the rest is the method's own."""

    name: ClassVar[str]
    Config: ClassVar[type]
    trains: ClassVar[bool] = True  # False: the encoder is used as initialised (random init)
    needs_labels: ClassVar[bool] = False  # True: batches carry the pretraining split's labels
    loss_name: ClassVar[str] = "none"  # the `loss` record column

    def __init__(self, encoder: Encoder, cfg, data: PretrainData):
        super().__init__()
        self.encoder, self.cfg = encoder, cfg

    def optimizers(self, train) -> dict[str, torch.optim.Optimizer]:
        """Default: one Adam over every parameter at the train config's learning rate."""
        return {"model": adam(self.parameters(), train.lr, train.beta1)}

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """batch: images (B, C, S, S) in [-1, 1] (this process's slice, augmented), and labels when
        `needs_labels`. -> {metric: scalar tensor}, the first one the headline loss."""
        raise NotImplementedError

    @classmethod
    def label(cls, cfg) -> str:
        """The method's name: `name`, then `option=value` for every option off its default."""
        return "/".join([cls.name, *non_default(cfg)])

    @classmethod
    def descriptors(cls, cfg) -> dict[str, str]:
        """Extra record columns: the mask (if any) and the loss, as tables name them."""
        return {"mask": "none", "loss": cls.loss_name}


def non_default(cfg, skip: tuple[str, ...] = ()) -> list[str]:
    """['option=value'] for each field of dataclass `cfg` that differs from its default."""
    parts = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if f.name not in skip and value != default:
            parts.append(f"{f.name}={value}")
    return parts


# The registry: name -> pretext class. Each plug-in file decorates its class with
# `@register_pretext`; `ctxenc/pretext/__init__.py` imports the files (one line each).
PRETEXTS: dict[str, type[Pretext]] = {}


def register_pretext(cls: type[Pretext]) -> type[Pretext]:
    PRETEXTS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class PretextSpec:
    """A pretext as configs and checkpoints name it: its registered name and its options."""

    name: str
    cfg: object

    @property
    def method(self) -> type[Pretext]:
        return PRETEXTS[self.name]

    @property
    def label(self) -> str:
        return self.method.label(self.cfg)

    def record_fields(self) -> dict[str, str]:
        """The record columns that say which pretext made a row: pretext, method, mask, loss."""
        return {"pretext": self.name, "method": self.label, **self.method.descriptors(self.cfg)}

    def as_dict(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self.cfg)}


def pretext_spec(spec: dict | str, where: str = "pretext") -> PretextSpec:
    """{name: NAME, **options} (or a bare name) -> PretextSpec, options validated by the pretext's Config."""
    from ctxenc.config import from_dict

    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a mapping such as {{name: context_encoder, mask: random_region}}, got {spec!r}.")
    options = dict(spec)
    name = options.pop("name", None)
    if name not in PRETEXTS:
        raise UserError(f"unknown pretext {name!r} in {where}; valid pretexts: {', '.join(PRETEXTS)}.")
    return PretextSpec(name, from_dict(PRETEXTS[name].Config, options, f"{where} ({name})"))


def build_pretext(spec: PretextSpec, encoder: Encoder, data: PretrainData) -> Pretext:
    """The pretext model for `spec` around `encoder`."""
    return spec.method(encoder, spec.cfg, data)
