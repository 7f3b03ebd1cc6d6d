"""Decode image files once into memory-mapped .npy arrays, keyed by what was decoded.

VOC and image folders hold JPEG/PNG files of any size; decoding them takes minutes and the
decoded images (10k VOC images at 256 px: 2 GB) need not sit in memory. The first load decodes
every file (in threads: PIL releases the GIL while decoding and resizing) into `.npy` files under
the cache folder; later loads memory-map them, so a dataset's arrays are tensors costing no memory
until read. Batches are read with `read_rows`, from the file rather than through the map: a page a
memory map has touched stays in the process's resident memory (RSS) until unmapped, so one pass
over a 50k-image split at 256 px would leave ~10 GB resident, and over ImageNet more than the
machine has. The key holds each file's path, size and modification time (image folders: the
digest of their listing, `ctxenc.data.manifest`), so an edited or replaced file is decoded again.

The decoding streams: chunks of ~`CHUNK_BYTES`, at most two per thread in memory, written in
place and recorded once on disk, so a killed build (ImageNet: an hour or more) resumes where it
stopped instead of starting again.

An entry verifies itself: beside each `.npy` a sidecar holds its size and a checksum of its
first and last MiB (`ctxenc.io.write_check`), checked with the arrays' shapes on every open. An
entry a full disk or an interrupted copy damaged is removed and decoded again, with a one-line
warning. The arrays' space is reserved before decoding, so a full disk is one sentence up front,
not a crash (SIGBUS) when a page of the memory map cannot be written.

Under torchrun, rank 0 opens (or decodes) an entry while the other processes wait at a barrier,
then they open it: a dataset is decoded once, not by every process at once. A process that then
finds no entry (a node whose cache folder rank 0 cannot see) decodes its own.

Cache folder: `$CTXENC_CACHE`, else `~/.cache/ctxenc`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
import weakref
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ctxenc import distributed
from ctxenc.errors import UserError
from ctxenc.io import (atomic_write_text, cache_root, check_problem, disk_full_error, is_disk_full, locked, warn,
                       write_check)

CHUNK_BYTES = 8 * 2**20  # decoded bytes per chunk (~300 images at 96 px, ~40 at 256 px)
SYNC_SECONDS = 1.0  # finished chunks are synced and recorded in groups, at most this often


def file_fingerprint(paths: list[Path]) -> str:
    """sha1 over (path, size, mtime) of `paths`: changes when any file is replaced or edited."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def decoded_arrays(key: dict, count: int, fields: dict[str, tuple[tuple[int, ...], str]],
                   decode: Callable[[int], dict[str, np.ndarray]], desc: str) -> dict[str, np.ndarray]:
    """Arrays {field: (count, *shape)} filled by `decode(i)`, decoded once and memory-mapped after.

    key: JSON-able description of what is decoded (reader, folder, split, size, fingerprint).
    fields: {name: (per-item shape, numpy dtype name)}. The arrays are opened copy-on-write, so
    torch can wrap them and nothing a caller writes reaches the cache. Read batches of them with
    `read_rows`, which keeps the map's pages out of the process's memory.
    """
    name = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = cache_root() / "decoded" / name
    # Under torchrun rank 0 goes first; the others wait, then open what it wrote.
    arrays = _open_or_decode(folder, key, count, fields, decode, desc) if distributed.is_main() else None
    distributed.wait_for_main()
    if not distributed.is_main():
        arrays = _open_or_decode(folder, key, count, fields, decode, desc)
    if arrays is None:
        raise UserError(f"the decoded-image cache entry {folder} was damaged right after it was written; "
                        "check the disk holding it, or set CTXENC_CACHE to another folder.")
    return arrays


def _open_or_decode(folder: Path, key: dict, count: int, fields: dict, decode: Callable, desc: str) -> dict[str, np.ndarray] | None:
    """The entry's arrays, decoded first if it is missing or damaged; None if damaged right after writing."""
    arrays = _open_entry(folder, count, fields)
    if arrays is None:
        _decode_into(folder, key, count, fields, decode, desc)
        arrays = _open_entry(folder, count, fields)
    return arrays


def _open_entry(folder: Path, count: int, fields: dict) -> dict[str, np.ndarray] | None:
    """The entry's memory-mapped arrays; None if it is missing, or damaged (then removed, with a warning)."""
    if not (folder / "key.json").is_file():  # written last: without it the entry never completed
        return None
    problems = [p for f in fields if (p := check_problem(folder / f"{f}.npy"))]
    if not problems:
        try:
            arrays = {f: np.load(folder / f"{f}.npy", mmap_mode="c") for f in fields}
        except (OSError, ValueError) as err:
            problems = [f"{err}"]
        else:
            problems = [f"{f}.npy holds {a.dtype} {a.shape}, expected {fields[f][1]} {(count, *fields[f][0])}"
                        for f, a in arrays.items() if a.shape != (count, *fields[f][0]) or a.dtype != fields[f][1]]
            if not problems:
                for f, array in arrays.items():
                    _register(array, folder / f"{f}.npy")
                return arrays
            del arrays
    warn(f"the decoded-image cache entry {folder} is damaged ({problems[0]}); decoding the images again.")
    shutil.rmtree(folder, ignore_errors=True)
    return None


# The decoded arrays' memory maps, by address: start -> (end, file descriptor, file offset of start).
# An entry lives as long as its array (`weakref.finalize`), so an address reused by a later
# mapping is never taken for it.
_MAPPED: dict[int, tuple[int, int, int]] = {}


def _register(array: np.memmap, path: Path) -> None:
    """Let `read_rows` read the rows of `array` (and of every tensor viewing it) from `path`."""
    fd = os.open(path, os.O_RDONLY)  # the file the map shows, even if the entry is rebuilt later
    start = array.ctypes.data
    _MAPPED[start] = (start + array.nbytes, fd, array.offset)
    weakref.finalize(array, _forget, start, fd)


def _forget(start: int, fd: int) -> None:
    _MAPPED.pop(start, None)
    os.close(fd)


def read_rows(data: torch.Tensor, rows: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """data (N, ...) -> data[rows] (b, ...) in memory: `out` if given (contiguous), else a new tensor.

    rows: int64 (b,) in [0, N), or None for all of `data` (then `data` itself is returned when
    it is not a decoded-cache array: nothing needs reading).

    The rows of a decoded-cache array (or of a view of one whose rows are contiguous, such as a
    slice) are read from its file with pread, one read per row (one per slice), never through
    the memory map: the process's memory then follows the batch, not the rows read so far, and
    the page cache, which the kernel reclaims freely, holds the file. Measured on 64 random rows
    of 196 KB from a cached file: pread 2.0 ms, index_select through the map 1.8 ms (every page
    left resident), index_select then madvise(MADV_DONTNEED) of the rows 2.5 ms. Other tensors
    are read with index_select.
    """
    where = _file_of(data)
    if where is None:
        if rows is None:
            return data
        return torch.index_select(data, 0, rows, out=out) if out is not None else torch.index_select(data, 0, rows)
    fd, first, stride, row_bytes = where
    if out is None:
        out = torch.empty((len(data) if rows is None else len(rows), *data.shape[1:]), dtype=data.dtype)
    if not out.is_contiguous():
        raise ValueError("read_rows reads into a contiguous tensor")
    buffer = memoryview(out.numpy().reshape(-1).view(np.uint8))
    if rows is None and stride == row_bytes:  # a contiguous run of rows: one read
        _pread_all(fd, buffer, first)
        return out
    for i, row in enumerate(range(len(data)) if rows is None else rows.tolist()):
        if not 0 <= row < len(data):
            raise IndexError(f"row {row} is out of range for {len(data)} rows")
        _pread_all(fd, buffer[i * row_bytes : (i + 1) * row_bytes], first + row * stride)
    return out


def _file_of(data: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(file descriptor, file offset of data[0], bytes from row to row, bytes per row) when `data`
    lies in a decoded-cache array's map and each of its rows is contiguous; else None."""
    if not _MAPPED or not isinstance(data, torch.Tensor) or data.device.type != "cpu" or data.dim() == 0 \
            or len(data) == 0 or not data[0].is_contiguous():
        return None
    address, row_bytes, stride = data.data_ptr(), data[0].nbytes, data.stride(0) * data.element_size()
    for start, (end, fd, offset) in list(_MAPPED.items()):  # a copy: a finalizer may run meanwhile
        if start <= address and address + (len(data) - 1) * stride + row_bytes <= end:
            return fd, offset + address - start, stride, row_bytes
    return None


def _pread_all(fd: int, buffer: memoryview, offset: int) -> None:
    while buffer:
        got = os.preadv(fd, [buffer], offset)
        if got == 0:
            raise OSError(errno.EIO, "a decoded-image cache file ended before its rows")
        buffer, offset = buffer[got:], offset + got


def _decode_into(folder: Path, key: dict, count: int, fields: dict, decode: Callable, desc: str) -> None:
    """Decode items 0..count-1 into the entry `folder`, chunk by chunk, resuming a build that was killed.

    The arrays grow in `.NAME.partial/` beside the entry; `chunks.txt` there lists the chunks whose
    bytes are on disk (synced before they are listed), so a build stopped any way, `kill -9`
    included, decodes only the other chunks when run again. At most two chunks per thread are in
    memory. Threads: `torch.get_num_threads()` (OMP_NUM_THREADS, a suite's `threads:`), within
    the CPUs this process may run on. One process builds an entry at a time (a file lock); the
    others wait and then open it.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder.parent / f".{folder.name}"):  # holds .NAME.lock
        if (folder / "key.json").is_file():  # another process built it while this one waited
            return
        partial = folder.parent / f".{folder.name}.partial"
        header = json.dumps({"key": key, "count": count, "fields": fields, "chunk": _chunk_items(fields)}, sort_keys=True)
        try:
            done = _resume(partial, header, count, fields)
            _decode_chunks(partial, done, count, fields, decode, desc)
        except UserError:  # a bad image or a full disk: the fix changes the key, or needs the space back
            shutil.rmtree(partial, ignore_errors=True)
            raise
        for f in fields:
            write_check(partial / f"{f}.npy")
        # key.json last: its presence marks a complete cache entry.
        atomic_write_text(partial / "key.json", json.dumps(key, sort_keys=True, indent=1))
        (partial / "chunks.txt").unlink()
        os.replace(partial, folder)
        # Waiters hold the lock file open; each looks for key.json once it has the lock. (After a
        # failure the lock stays: a waiter and a newcomer must not build on two different locks.)
        (folder.parent / f".{folder.name}.lock").unlink(missing_ok=True)


def _chunk_items(fields: dict) -> int:
    """Items per chunk: about CHUNK_BYTES of decoded arrays, the unit of work, of memory and of resuming."""
    item_bytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in fields.values())
    return max(1, min(4096, CHUNK_BYTES // item_bytes))


def _resume(partial: Path, header: str, count: int, fields: dict) -> set[int]:
    """The chunks a killed build of this entry completed (its arrays kept); a fresh partial entry when there is none."""
    record = partial / "chunks.txt"
    try:
        lines = record.read_text().split("\n")
        if lines[0] == header:
            # The last line is cut short when a kill hit it while being written: it did not count.
            done = {int(line) for line in lines[1:-1]}
            for f, (shape, dtype) in fields.items():
                array = np.load(partial / f"{f}.npy", mmap_mode="r")
                if array.shape != (count, *shape) or array.dtype != dtype:
                    raise ValueError(f"{f}.npy holds {array.dtype} {array.shape}")
                del array
            return done
    except (OSError, ValueError):  # none, or not this build's: start again
        pass
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for f, (shape, dtype) in fields.items():
        # Writes the header and sizes the file, sparse until `_reserve` allocates it.
        np.lib.format.open_memmap(partial / f"{f}.npy", mode="w+", dtype=dtype, shape=(count, *shape))
        _reserve(partial / f"{f}.npy")
    atomic_write_text(record, header + "\n")
    return set()


def _decode_chunks(partial: Path, done: set[int], count: int, fields: dict, decode: Callable, desc: str) -> None:
    """Decode the chunks not in `done`, writing each with pwrite and listing it in chunks.txt once synced."""
    chunk = _chunk_items(fields)
    todo = iter([c for c in range(-(-count // chunk)) if c not in done])
    skipped = sum(min(chunk, count - c * chunk) for c in done)
    if skipped:
        print(f"ctxenc: {desc}: resuming an interrupted decode, {skipped} of {count} images already done.",
              file=sys.stderr, flush=True)
    fds = {f: os.open(partial / f"{f}.npy", os.O_RDWR) for f in fields}
    offsets = {}
    for f in fields:
        array = np.load(partial / f"{f}.npy", mmap_mode="r")
        offsets[f] = (array.offset, array[0].nbytes)
        del array

    def decode_chunk(c: int) -> tuple[int, int]:
        start, stop = c * chunk, min(count, (c + 1) * chunk)
        out = {f: np.empty((stop - start, *shape), dtype) for f, (shape, dtype) in fields.items()}
        for i in range(start, stop):
            for f, value in decode(i).items():
                out[f][i - start] = value
        for f, array in out.items():
            _pwrite_all(fds[f], memoryview(array).cast("B"), offsets[f][0] + start * offsets[f][1])
        return c, stop - start

    workers = max(1, min(len(os.sched_getaffinity(0)), torch.get_num_threads()))
    pool = ThreadPoolExecutor(workers)
    running, finished, synced_at = set(), [], time.monotonic()
    try:
        with open(partial / "chunks.txt", "a") as record, \
                tqdm(total=count, initial=skipped, desc=desc, unit="img", leave=False, disable=None) as bar:
            while True:
                while len(running) < 2 * workers and (c := next(todo, None)) is not None:
                    running.add(pool.submit(decode_chunk, c))
                if not running:
                    break
                ready, running = wait(running, return_when=FIRST_COMPLETED)
                for future in ready:
                    c, items = future.result()
                    finished.append(c)
                    bar.update(items)
                # Sync in groups (every SYNC_SECONDS, and at the end): a kill loses at most that much work.
                if finished and (not running or time.monotonic() - synced_at >= SYNC_SECONDS):
                    for fd in fds.values():
                        os.fdatasync(fd)
                    record.write("".join(f"{c}\n" for c in finished))
                    record.flush()
                    os.fsync(record.fileno())
                    finished, synced_at = [], time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for fd in fds.values():
            os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _reserve(path: Path) -> None:
    """Allocate the (sparse) file's blocks now: a full disk is a `UserError` here, not a SIGBUS mid-decode."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(path, os.fstat(fd).st_size) from None
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: no reservation
            raise
    finally:
        os.close(fd)
