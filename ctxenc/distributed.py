"""Multi-process training (torchrun + torch.distributed), kept in this one module.

With one process every function is a no-op, so the training loop reads the same with one
process or many. Under `torchrun --nproc_per_node=N -m ctxenc pretrain ...` each process takes
its slice of every global batch, gradients are averaged with all-reduce (gloo on CPU, NCCL on
GPU), and only rank 0 writes checkpoints, logs and records.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


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


def average_gradients(parameters) -> None:
    """Replace each gradient with its mean over processes (one flat all-reduce)."""
    if not dist.is_initialized():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average scalar tensors over processes (for logging and the non-finite check)."""
    if not dist.is_initialized():
        return values
    stacked = torch.stack([v.detach().float() for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / world_size()))
