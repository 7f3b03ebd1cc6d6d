"""Multi-process training (torchrun + torch.distributed), kept in this one module.

With one process every function is a no-op, so the training loop reads the same with one
process or many. Under `torchrun --nproc_per_node=N -m ctxenc pretrain ...` each process takes
its slice of every global batch, gradients are averaged by PyTorch's DistributedDataParallel
(bucketed all-reduce overlapped with the backward pass; gloo on CPU, NCCL on GPU), and only
rank 0 writes checkpoints, logs and records.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

# A 1-channel convolution's weight (C_out, 1, k, k) has two stride layouts for the same memory; DDP
# warns that they differ, at every step. Nothing to fix: its bucket copy is the same either way.
warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


def init() -> None:
    """Join the process group that torchrun describes in the environment (if any)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


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
    """Average scalar tensors over processes (for logging and the non-finite check)."""
    if not dist.is_initialized():
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / world_size()))
