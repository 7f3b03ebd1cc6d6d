"""Frozen features for the evaluators: batched inference, BatchNorm recalibration and pooled
features extracted once, then reused (as DINO's eval_knn does).

Inputs are float tensors (N, C, S, S) in [-1, 1] or `ModelInputs` (uint8 images converted per
batch on the device): both are read batch by batch, so only the outputs (features) are held.
Within `bfloat16_inference()` (`ctxenc evaluate --amp`), the batched forward passes run under
bfloat16 autocast and their outputs come back as float32: probes, heads and metrics never see
bfloat16.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Callable, TypeVar

import torch
from torch import nn

from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.inputs import ModelInputs

Output = TypeVar("Output", torch.Tensor, dict)
Images = torch.Tensor | ModelInputs  # float (N, C, S, S) in [-1, 1], or uint8 converted per batch

_bfloat16 = False  # set by `bfloat16_inference`
# Input values (C x S x S x images) per batch of frozen features: a batch's activations, not the
# split, set evaluation's peak memory. 2^23 values: 54 AlexNet images at 227 px (a 32 MB input,
# ~0.3 GB of activations), the whole default batch of 1000 at 32 px.
MAX_BATCH_VALUES = 2**23
# BatchNorm recalibration's batches (train-mode statistics, so the batch is part of the estimate):
# 500 images up to 128 px RGB (the protocols' choice), fewer above: 217 at 227 px (~1 GB peak).
RECALIBRATION_BATCH_VALUES = 2**25


@contextlib.contextmanager
def bfloat16_inference(enabled: bool = True):
    """Within: `batched` runs its function under bfloat16 autocast (float32's range, so no loss
    scaling, and frozen features need no gradients) and returns float32 outputs."""
    global _bfloat16
    previous, _bfloat16 = _bfloat16, enabled
    try:
        yield
    finally:
        _bfloat16 = previous


def _to_host(x: torch.Tensor) -> torch.Tensor:
    """A batch's output on the CPU, float32 where autocast made it bfloat16 (copied at half the bytes)."""
    x = x.cpu()
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], Output | None], x: Images, batch_size: int = 500,
            device: torch.device | str = "cpu") -> Output | None:
    """fn applied to x (N, ...) in batches of `batch_size` sent to `device`, without gradients; the
    outputs (a tensor (N, ...) or a dict of them, one row per input) come back to the CPU in order.
    x: a tensor, or `ModelInputs` (each batch converted on `device`). fn may return None (run for
    its side effects, such as BatchNorm statistics): then nothing is kept and None is returned.

    The outputs are allocated once, N rows shaped like the first batch's, and filled batch by
    batch: concatenating the batches at the end would hold the split's outputs twice.
    """
    device = torch.device(device)
    precision = torch.autocast(device.type, torch.bfloat16) if _bfloat16 else contextlib.nullcontext()
    outputs = None  # {key: (N, ...)}; the key None for a tensor output
    for i in range(0, len(x), batch_size):
        with precision:
            out = fn(x[i : i + batch_size].to(device))
        if out is None:
            continue
        parts = {k: _to_host(v) for k, v in (out.items() if isinstance(out, dict) else [(None, out)])}
        if outputs is None:
            outputs = {k: torch.empty((len(x), *v.shape[1:]), dtype=v.dtype) for k, v in parts.items()}
        for k, v in parts.items():
            outputs[k][i : i + batch_size] = v
    if outputs is None:
        return None
    return outputs[None] if None in outputs else outputs


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def recalibrated(encoder: Encoder, images: Images, max_images: int = 2000, batch_size: int = 500) -> Encoder:
    """A copy of `encoder` whose BatchNorm running statistics are recomputed on `images` (N, C, S, S)
    in [-1, 1] (the first `max_images`), in eval mode; the encoder handed in is not changed.

    Frozen protocols run the encoder in eval mode, on running statistics. Those gathered during
    pretraining describe masked images (a context encoder sees holes filled with the mean), and
    a random initialisation never saw an image at all: its statistics stay 0/1, its activations
    blow up or vanish layer after layer and a frozen head sees degenerate features. So every
    frozen protocol first re-estimates the statistics on unmasked training images: running
    averages reset, cumulative (momentum None) over the batches, weights untouched. The running
    variance averages the batches' variances, so the batch size is part of the estimate: it is
    `batch_size` up to RECALIBRATION_BATCH_VALUES input values per batch, fewer images above
    (a batch of 500 AlexNet images at 227 px would need ~2 GB of activations on its own).
    """
    encoder = copy.deepcopy(encoder).eval()
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return encoder
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over all batches, not an exponential one
        m.train()  # only the norms: dropout and the like stay in eval mode
    batch_size = min(batch_size, max(1, RECALIBRATION_BATCH_VALUES // math.prod(images.shape[1:])))

    def update_statistics(batch: torch.Tensor) -> None:
        encoder(batch)  # only the norms' running statistics are wanted, not the feature maps

    batched(update_statistics, images[:max_images], batch_size, device_of(encoder))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return encoder.eval()


def extract_features(encoder: Encoder, images: Images, stage: str | None = None, grid: int = 1,
                     batch_size: int = 1000) -> torch.Tensor:
    """images: (N, C, S, S) in [-1, 1] -> (N, D) pooled features of `stage` (default: the last).

    The encoder runs in eval mode: BatchNorm uses its running statistics (see `recalibrated`),
    so a feature does not depend on the other images in its batch. Batches go to the encoder's
    device; the features come back to the CPU.
    """
    if stage is not None and stage not in encoder.stage_names:
        raise UserError(f"encoder has no stage {stage!r}; its stages are {', '.join(encoder.stage_names)}.")
    encoder.eval()
    # In eval mode a feature does not depend on its batch, so the batch can shrink with the input size.
    batch_size = min(batch_size, max(1, MAX_BATCH_VALUES // math.prod(images.shape[1:])))
    return batched(lambda x: encoder.pooled(x, stage, grid), images, batch_size, device_of(encoder))
