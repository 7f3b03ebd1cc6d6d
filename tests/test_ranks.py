"""What each torchrun process does on its own, checked in one process by playing a rank: the
backend it joins, the part of a batch it copies and augments, its wait for rank 0's image cache.
(tests/test_distributed.py runs 2 real processes.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctxenc import distributed
from ctxenc.data import cache
from ctxenc.data.transforms import crop_flip, crop_flip_draws, to_model_input
from ctxenc.device import grad_scaler
from ctxenc.engine import RowReader, local_batch
from ctxenc.pretext import StepContext

CPU = torch.device("cpu")


@pytest.mark.parametrize("device, backend", [("cpu", "gloo"), ("cuda", "nccl"), ("cuda:0", "nccl")])
def test_the_backend_follows_the_device_not_the_machine(device, backend, monkeypatch):
    """On a machine with CUDA, `--device cpu` trains CPU tensors, which NCCL cannot reduce."""
    joined = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(distributed, "resolve_device", lambda name: torch.device(name))  # no GPU to bind here
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend: joined.append(backend))
    monkeypatch.setattr(distributed.dist, "new_group", lambda **options: joined.append(options["backend"]))
    distributed.init(device)
    assert joined == [backend, "gloo"]  # the training group, then the CPU group for long waits


def playing_rank(rank: int, world: int, batch: int) -> StepContext:
    ctx = StepContext({}, CPU, False, torch.Generator().manual_seed(7), batch, grad_scaler(CPU, False), Path("last.pt"))
    local = batch // world
    ctx.mine = slice(rank * local, (rank + 1) * local)
    return ctx


@pytest.mark.parametrize("stored", [36, 28], ids=["cropped", "resized-then-cropped"])
def test_each_rank_augments_only_its_slice_and_gets_what_one_process_would(stored, monkeypatch):
    images = torch.randint(0, 256, (20, 1, stored, stored), dtype=torch.uint8)
    labels = torch.arange(20)
    index = torch.tensor([3, 17, 0, 9, 12, 5, 1, 19])
    # One process, the whole batch:
    whole = crop_flip(images[index], crop_flip_draws(8, (stored, stored), 32, torch.Generator().manual_seed(7)), 32)
    copied = []
    for rank in range(2):
        ctx = playing_rank(rank, 2, len(index))
        real_to_device = ctx.to_device
        monkeypatch.setattr(ctx, "to_device", lambda x: copied.append(len(x)) or real_to_device(x))
        with RowReader(images, labels, CPU) as reader:
            batch = local_batch(reader.read(index[ctx.mine]), 32, True, ctx)
        assert torch.equal(batch["images"], whole[ctx.mine])
        assert torch.equal(batch["labels"], labels[index][ctx.mine])
    assert copied == [4] * 6  # per rank: its 4 images, their 4 crops, their 4 labels


def test_without_augmentation_a_rank_converts_its_slice():
    images = torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8)
    index = torch.tensor([4, 2, 8, 6])
    with RowReader(images, None, CPU) as reader:
        batch = local_batch(reader.read(index[2:]), 32, False, playing_rank(1, 2, 4))
    assert torch.equal(batch["images"], to_model_input(images[index], 32)[2:]) and "labels" not in batch


def test_other_ranks_open_the_cache_entry_rank_0_built_while_they_waited(monkeypatch):
    key, fields = {"reader": "test"}, {"x": ((2,), "uint8")}

    def decode(i: int) -> dict[str, np.ndarray]:
        return {"x": np.full(2, i, dtype=np.uint8)}

    def barrier() -> None:
        waits.append(distributed.is_main())
        if not distributed.is_main():  # while rank 1 waits here, rank 0 decodes
            monkeypatch.setattr(distributed, "is_main", lambda: True)
            cache.decoded_arrays(key, 5, fields, decode, "rank 0")
            monkeypatch.setattr(distributed, "is_main", lambda: False)

    def not_here(i: int):
        raise AssertionError("a rank other than 0 decoded the images")

    waits = []
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    monkeypatch.setattr(distributed, "wait_for_main", barrier)
    arrays = cache.decoded_arrays(key, 5, fields, not_here, "rank 1")
    assert waits == [False, True]  # rank 1 waited; rank 0, done, reached the barrier too
    assert arrays["x"][:, 0].tolist() == [0, 1, 2, 3, 4]
