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

    One per training run; `step` is set by the loop before each call.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], device: torch.device, amp: bool,
                 generator: torch.Generator, global_batch: int, scaler: torch.amp.GradScaler, snapshot_path):
        self.optimizers, self.device, self.amp, self.generator = optimizers, device, amp, generator
        self.global_batch, self.scaler, self.snapshot_path = global_batch, scaler, snapshot_path
        self.step = 0
        world = distributed.world_size()
        local = global_batch // world
        self.mine = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
        self.syncs = {name: distributed.gradient_sync(p for group in opt.param_groups for p in group["params"])
                      for name, opt in optimizers.items()}

    def autocast(self):
        """Mixed precision where --amp asks for it (float16 on CUDA, bfloat16 on the CPU)."""
        return autocast(self.device, self.amp)

    def draw(self, sample: Callable[[int, torch.Generator], torch.Tensor]) -> torch.Tensor:
        """Random per-example data (masks, rotations, patch positions) for this process's slice.

        `sample(n, generator)` draws for the whole global batch on every process, so each process's
        slice is exactly what a single process would use for those images (same masks with 1 or N
        processes).
        """
        return sample(self.global_batch, self.generator)[self.mine].to(self.device, non_blocking=True)

    def update(self, loss: torch.Tensor, optimizer: str = "model", what: str = "loss") -> None:
        """Check the loss is finite (on every process), backpropagate it and step the optimizer
        named `optimizer`, with its gradients averaged over processes and scaled for float16.

        Under torchrun, every parameter of `optimizer` must get a gradient from `loss` (PyTorch's
        DDP stops with an error naming the parameters that did not)."""
        check_finite(distributed.mean({"x": loss})["x"], what, self.step, self.snapshot_path)
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        # Scaled gradients are averaged (every process has the same scale), then unscaled.
        self.syncs[optimizer](self.scaler.scale(loss)).backward()
        self.scaler.unscale_(opt)
        self.scaler.step(opt)


def adam(params, lr: float, beta1: float) -> torch.optim.Adam:
    """Adam as the paper's code (beta2 0.999), fused: one kernel over all parameters instead of a
    loop of small ones (measured 1.2x on the paper's inpainting model, whose two 32.8M-parameter
    layers made the unfused update cost about 1.5 s per step on 2 CPU cores)."""
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), fused=True)


def check_finite(loss: torch.Tensor, what: str, step: int, last) -> None:
    """Stop before a non-finite loss reaches the weights."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"the {what} became {loss.item()} at step {step}; training stopped (lower --lr); "
            f"the last good snapshot, if any, is kept as {last}."
        )


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
