"""Batches of the decoded-image cache are read from its file (`read_rows`): the same bytes as
indexing the memory map, without leaving the map's pages in the process's resident memory."""

import os
import re

import numpy as np
import pytest
import torch

from ctxenc.data.cache import decoded_arrays, read_rows
from ctxenc.engine import RowReader, dataset_mean
from ctxenc.evaluators.inputs import ModelInputs

N, SHAPE = 600, (3, 24, 24)  # 1.7 KB rows, 1 MB in all
BATCH = 32


def pixels(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, SHAPE, dtype=np.uint8)


@pytest.fixture
def mapped():
    """uint8 (N, *SHAPE), memory-mapped from a fresh decoded-cache entry (CTXENC_CACHE is per test)."""
    arrays = decoded_arrays({"test": "page-release"}, N, {"images": (SHAPE, "uint8")},
                            lambda i: {"images": pixels(i)}, "decode")
    return torch.from_numpy(arrays["images"])


def resident_kb(tensor: torch.Tensor) -> int:
    """Resident kB of the memory map holding `tensor` (/proc/self/smaps)."""
    address = tensor.data_ptr()
    text = open("/proc/self/smaps").read()
    for match in re.finditer(r"^([0-9a-f]+)-([0-9a-f]+) .*?^Rss:\s+(\d+) kB", text, re.M | re.S):
        if int(match[1], 16) <= address < int(match[2], 16):
            return int(match[3])
    raise AssertionError("no mapping holds the tensor")


def test_read_rows_gives_the_bytes_indexing_gives(mapped):
    expected = torch.from_numpy(np.stack([pixels(i) for i in range(N)]))
    rows = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:50]
    assert torch.equal(read_rows(mapped, rows), expected[rows])
    out = torch.empty((len(rows), *SHAPE), dtype=torch.uint8)
    assert read_rows(mapped, rows, out=out) is out and torch.equal(out, expected[rows])
    for part in (slice(100, 140), slice(5, None, 7), slice(N - 1, None)):  # contiguous: one read; strided: one per row
        assert torch.equal(read_rows(mapped[part]), expected[part])
    assert torch.equal(read_rows(mapped[5::7], torch.tensor([3, 0])), expected[5::7][[3, 0]])
    assert read_rows(mapped, torch.tensor([], dtype=torch.long)).shape == (0, *SHAPE)
    with pytest.raises(IndexError):
        read_rows(mapped, torch.tensor([N]))
    in_memory = expected.clone()
    assert read_rows(in_memory) is in_memory  # nothing to read
    assert torch.equal(read_rows(in_memory, rows), expected[rows])


def test_reading_every_batch_leaves_the_map_unresident(mapped):
    assert resident_kb(mapped) == 0  # decoding wrote the file with pwrite, not through a map
    inputs = ModelInputs(mapped, 20)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    with RowReader(mapped, None, torch.device("cpu")) as reader:
        for i in range(0, N, BATCH):
            reader.read(order[i : i + BATCH], order[i + BATCH : i + 2 * BATCH] if i + BATCH < N else None)
            inputs[i : i + BATCH].to("cpu")
            inputs[order[i : i + BATCH]].to("cpu")
    dataset_mean(mapped, 20)
    assert resident_kb(mapped) <= 8  # the page holding the .npy header at most
    # The test can fail: indexing through the map leaves what it touched resident.
    mapped[order[: N // 2]].sum()
    assert resident_kb(mapped) > N // 2 * mapped[0].nbytes // 1024 // 2


def test_model_inputs_index_like_tensors(mapped):
    inputs = ModelInputs(mapped, 24)
    mask = torch.arange(N) % 3 == 0
    for index in (mask, torch.tensor([-1, 0, 5])):
        assert torch.equal(inputs[index].pixels, mapped.clone()[index])
    assert torch.equal(inputs[10:20].to("cpu"), inputs[torch.arange(10, 20)].to("cpu"))


def test_a_dropped_array_is_forgotten_and_its_file_closed():
    from ctxenc.data import cache

    before = dict(cache._MAPPED)
    arrays = decoded_arrays({"test": "forgotten"}, 4, {"images": (SHAPE, "uint8")}, lambda i: {"images": pixels(i)}, "decode")
    view = torch.from_numpy(arrays["images"])[1:3]
    (start,) = set(cache._MAPPED) - set(before)
    fd = cache._MAPPED[start][1]
    del arrays
    assert start in cache._MAPPED  # the view keeps its array, and the array its entry
    assert torch.equal(read_rows(view), torch.from_numpy(np.stack([pixels(1), pixels(2)])))
    del view
    assert start not in cache._MAPPED
    with pytest.raises(OSError):
        os.fstat(fd)
