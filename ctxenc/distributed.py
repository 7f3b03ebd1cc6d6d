"""Multi-process training (torchrun + torch.distributed), kept in this one module.

With one process every function is a no-op, so the training loop reads the same with one
process or many. Under `torchrun --nproc_per_node=N -m ctxenc pretrain --device cpu|cuda ...`
each process takes its slice of every global batch, gradients are averaged by PyTorch's
DistributedDataParallel (bucketed all-reduce overlapped with the backward pass), and only
rank 0 writes checkpoints, logs and records. The backend follows the device: gloo for CPU
tensors, NCCL for CUDA ones (NCCL cannot reduce CPU tensors, so CUDA being installed is not
enough).
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ctxenc.device import resolve_device

# A 1-channel convolution's weight (C_out, 1, k, k) has two stride layouts for the same memory; DDP
# warns that they differ, at every step. Nothing to fix: its bucket copy is the same either way.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


# Rank 0 alone may work for hours while the others wait (decoding a dataset into the image cache):
# they wait on a CPU group of their own, whose timeout is far longer than a training collective's.
LONG_WAIT = timedelta(hours=24)
_host_group = None


def init(device: str | torch.device) -> None:
    """Join the process group that torchrun describes in the environment (if any), with the
    backend of the training device (`--device`): NCCL for CUDA, gloo for the CPU. Under torchrun,
    'cuda' is this process's GPU, cuda:$LOCAL_RANK (`resolve_device`)."""
    global _host_group
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dev = resolve_device(device)  # before the group: NCCL binds to the current GPU
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        _host_group = dist.new_group(backend="gloo", timeout=LONG_WAIT)


def close() -> None:
    global _host_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _host_group = None


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wait_for_main() -> None:
    """A barrier for work rank 0 does alone, however long it takes (up to LONG_WAIT)."""
    if dist.is_initialized():
        dist.barrier(group=_host_group)


class _Parameters(nn.Module):
    """One optimizer's parameters as the module DDP replicates. Its forward passes the loss through:
    DDP's forward then arms its reducer for the backward pass of that loss, and the reducer averages
    the gradients in buckets as the backward pass produces them. Parameters another loss reaches (a discriminator's in the
    generator's loss) keep their local gradients: their own reducer is not armed."""

    def __init__(self, params):
        super().__init__()
        self.params = nn.ParameterList(params)

    def forward(self, loss: torch.Tensor) -> torch.Tensor:
        return loss


def gradient_sync(params):
    """-> sync(loss), the loss to call backward on: with several processes, through PyTorch's
    DistributedDataParallel over `params` (their gradients arrive averaged over processes); with
    one, the loss itself. One per optimizer, made once (DDP broadcasts rank 0's parameters)."""
    if not dist.is_initialized():
        return lambda loss: loss
    # Every parameter must get a gradient from each backward of its optimizer's loss (true of every
    # pretext here): find_unused_parameters would walk the autograd graph at every step to allow otherwise.
    return DistributedDataParallel(_Parameters(list(params)), find_unused_parameters=False)


def mean(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average scalar tensors over processes (the non-finite check, which every process must agree on)."""
    if not dist.is_initialized():
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / world_size()))


def total(values: torch.Tensor) -> torch.Tensor:
    """The sum over processes of `values` (any shape, on the training device); itself with one process."""
    if not dist.is_initialized():
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values
