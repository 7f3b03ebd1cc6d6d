"""Image folders decoded per batch: when the decoded cache would not fit on the disk, or `cache: false`.

`StreamedImages` stands where the memory-mapped uint8 tensor (N, 3, S, S) of the decoded cache
(`ctxenc.data.cache`) would: it has its shape, dtype and length, and indexing it (an int, a
slice, an index tensor) decodes those image files, by the function that fills the cache
(`imagefolder.read_square`), so a streamed batch is bit for bit the cached one.

A read of more than one image is shared among DataLoader worker processes: the rows are cut into
one chunk per worker, each worker decodes its chunk into shared memory, and the chunks are
copied into the output in order. The workers are forked at the first such read and kept
(`persistent_workers`); each read is one pass of the DataLoader over a batch sampler set to that
read's chunks (as `DistributedSampler.set_epoch` sets an epoch). Which rows are read, and in what
order, stays the caller's: the training loop draws them as it does for the cache, and its
`RowReader` thread asks for the next step's rows while this one trains.

Beside a sharded format (WebDataset tar shards, LitData chunks) this reads one small file per
image: fine on a local disk, slow on a network file system, where shards turn 1.28 M opens into
a few thousand sequential reads. It needs no conversion of the folder and no second copy on disk.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ctxenc.errors import UserError


def default_workers() -> int:
    """Decoding processes per training process: the CPUs this process may run on, shared by the
    node's training processes (torchrun's LOCAL_WORLD_SIZE), less one for the training process."""
    cpus = len(os.sched_getaffinity(0)) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, cpus - 1)


class StreamedImages:
    """uint8 (N, 3, size, size) images decoded from their files when indexed.

    paths: (N,) bytes, the image files in dataset order (a numpy array, not N Python objects:
    forked workers share it without copying); decode(path, size) -> uint8 (3, size, size);
    workers: decoding processes (default `default_workers()`; 0: decode in the calling thread).
    """

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, paths: np.ndarray, size: int, decode: Callable[[str, int], torch.Tensor], workers: int | None = None):
        self.paths, self.size, self.decode = paths, size, decode
        self.workers = default_workers() if workers is None else workers
        self._chunks = _Chunks()
        self._loader: DataLoader | None = None
        self._lock = threading.Lock()  # one read at a time uses the workers (the loop's thread, or the main thread)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, self.size, self.size))

    def dim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"StreamedImages({len(self)} images at {self.size} px, {self.workers} workers)"

    def __getitem__(self, index: int | slice | torch.Tensor) -> torch.Tensor:
        """An int -> (3, S, S); a slice or index tensor / list -> (B, 3, S, S), decoded now."""
        if isinstance(index, (int, np.integer)):
            return self.decode(os.fsdecode(self.paths[index]), self.size)
        rows = torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index, dtype=torch.long)
        return self.read(rows)

    def read(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """rows (B,) int64 -> uint8 (B, 3, S, S), into `out` when given (e.g. pinned memory)."""
        rows = rows.reshape(-1)
        if out is None:
            out = torch.empty((len(rows), 3, self.size, self.size), dtype=torch.uint8)
        if self.workers == 0 or len(rows) < 2:
            for k, row in enumerate(rows.tolist()):
                out[k] = self[row]
            return out
        with self._lock:
            self._chunks.chunks = [chunk.tolist() for chunk in rows.tensor_split(min(self.workers, len(rows)))]
            if self._loader is None:
                self._loader = DataLoader(_Files(self), batch_sampler=self._chunks, num_workers=self.workers,
                                          persistent_workers=True)
            start = 0
            try:
                for chunk in self._loader:  # in the sampler's order
                    out[start : start + len(chunk)] = chunk
                    start += len(chunk)
            except UserError:  # a worker's comes wrapped in its traceback: read the images here for its one sentence
                for row in rows.tolist():
                    self[row]
                raise
        return out


    def close(self) -> None:
        """Stop the worker processes now (else they stop when this object is collected); a later read starts new ones."""
        with self._lock:
            if self._loader is not None and self._loader._iterator is not None:
                self._loader._iterator._shutdown_workers()
            self._loader = None


class _Chunks:
    """A batch sampler yielding the current read's chunks of rows; set before each pass."""

    def __init__(self):
        self.chunks: list[list[int]] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class _Files(Dataset):
    """Image i of `images`, decoded in a worker."""

    def __init__(self, images: StreamedImages):
        self.paths, self.size, self.decode = images.paths, images.size, images.decode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.decode(os.fsdecode(self.paths[i]), self.size)
