"""Where tensors run and in which precision: `--device` and `--amp`, in one place.

Mixed precision (`--amp`): on CUDA, float16 autocast with a gradient scaler (float16's range is
small, so the loss is scaled up before backward and gradients unscaled before the step, skipping
steps whose gradients overflowed); on the CPU, bfloat16 autocast, which has float32's range and
needs no scaler. BatchNorm, losses and reductions stay in float32 under autocast either way.

On CUDA, `resolve_device` also turns on cuDNN's autotuner and TF32 float32 matmuls (`tune_cuda`
says what that changes); the CPU's numerics are never touched.
"""

from __future__ import annotations

import contextlib
import os

import torch

from ctxenc.errors import UserError


def resolve_device(name: str | torch.device | None) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> a device that exists here, else a `UserError`.

    Under torchrun, plain 'cuda' means this process's GPU, cuda:$LOCAL_RANK.
    """
    try:
        device = torch.device(name or "cpu")
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} asks for a GPU, but torch finds no CUDA device here; use --device cpu.")
        if device.index is None and "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0.")
        torch.cuda.set_device(device)  # NCCL's collectives and new CUDA tensors go to this GPU
        tune_cuda()
    elif device.type != "cpu":
        raise UserError(f"unsupported device {name!r}; use cpu, cuda or cuda:N.")
    return device


def tune_cuda() -> None:
    """Speed over bit-exact repeats, on CUDA only; the CPU's numerics are left as they are.

    - `cudnn.benchmark`: cuDNN times its convolution algorithms once per input shape and keeps
      the fastest. Values are the same up to float32 rounding, but the chosen algorithm (hence the
      order of summation, the last bits) may differ between two runs: a CUDA run is not bit-for-bit
      repeatable (it is not anyway: RoI pooling, interpolation and index backward passes add with
      atomics). The CPU runs, which the determinism tests and the committed results use, are.
    - TF32 float32 matmuls (Ampere and later): the linear layers, heads and the dcgan bottleneck
      multiply float32 inputs rounded to a 10-bit mantissa, accumulated in float32 (relative error
      about 1e-3 per product, like cuDNN's convolutions, which use TF32 by PyTorch's default).
      Losses, BatchNorm, reductions, metrics and the stored weights stay float32.
    """
    torch.backends.cudnn.benchmark = True
    # The flag PyTorch has long had, not the newer `fp32_precision`: setting that one makes
    # `torch.get_float32_matmul_precision()` raise for any code that still asks.
    torch.backends.cuda.matmul.allow_tf32 = True


def place(x: torch.nn.Module | torch.Tensor, device: torch.device, channels_last: bool = False):
    """Move a model or a batch (B, C, H, W) to `device`, in channels-last memory format if asked.

    Channels-last (NHWC) is the layout CUDA's tensor cores want for AMP convolutions; on this
    project's CPUs it was a wash for context encoders (from 15% slower to 9% faster per step,
    benchmarks/speed_pretrain.py). Values are unchanged, only their layout in memory.
    """
    if not channels_last or (isinstance(x, torch.Tensor) and x.dim() != 4):
        return x.to(device)
    return x.to(device, memory_format=torch.channels_last)


def autocast(device: torch.device, enabled: bool):
    """Mixed-precision context: float16 on CUDA, bfloat16 on the CPU; a no-op when not enabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A loss scaler that is active only for float16 (CUDA) mixed precision."""
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")
