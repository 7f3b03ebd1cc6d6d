"""Decode image files once into memory-mapped .npy arrays, keyed by what was decoded.

VOC and image folders hold JPEG/PNG files of any size; decoding them takes minutes and the
decoded images (10k VOC images at 256 px: 2 GB) need not sit in memory. The first load decodes
every file (in threads: PIL releases the GIL while decoding and resizing) into `.npy` files under
the cache folder; later loads memory-map them, so the operating system pages in only the images
a batch touches. The key holds each file's path, size and modification time, so an edited or
replaced file is decoded again.

An entry verifies itself: beside each `.npy` a sidecar holds its size and a checksum of its
first and last MiB (`ctxenc.io.write_check`), checked with the arrays' shapes on every open. An
entry a full disk or an interrupted copy damaged is removed and decoded again, with a one-line
warning. The arrays' space is reserved before decoding, so a full disk is one sentence up front,
not a crash (SIGBUS) when a page of the memory map cannot be written.

Cache folder: `$CTXENC_CACHE`, else `~/.cache/ctxenc`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from ctxenc.errors import UserError
from ctxenc.io import atomic_write_text, cache_root, check_problem, disk_full_error, is_disk_full, warn, write_check


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
    torch can wrap them and nothing a caller writes reaches the cache.
    """
    name = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = cache_root() / "decoded" / name
    arrays = _open_entry(folder, count, fields)
    if arrays is None:
        _decode_into(folder, key, count, fields, decode, desc)
        arrays = _open_entry(folder, count, fields)
    if arrays is None:
        raise UserError(f"the decoded-image cache entry {folder} was damaged right after it was written; "
                        "check the disk holding it, or set CTXENC_CACHE to another folder.")
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
                return arrays
            del arrays
    warn(f"the decoded-image cache entry {folder} is damaged ({problems[0]}); decoding the images again.")
    shutil.rmtree(folder, ignore_errors=True)
    return None


def _decode_into(folder: Path, key: dict, count: int, fields: dict, decode: Callable, desc: str) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        arrays = {f: np.lib.format.open_memmap(tmp / f"{f}.npy", mode="w+", dtype=dtype, shape=(count, *shape))
                  for f, (shape, dtype) in fields.items()}
        for f in fields:
            _reserve(tmp / f"{f}.npy")

        def fill(i: int) -> None:
            for f, value in decode(i).items():
                arrays[f][i] = value

        workers = min(8, os.cpu_count() or 1) if count > 64 else 1
        with ThreadPoolExecutor(workers) as pool:
            for _ in tqdm(pool.map(fill, range(count)), total=count, desc=desc, unit="img", leave=False, disable=None):
                pass
        for array in arrays.values():
            array.flush()
        del arrays
        for f in fields:
            write_check(tmp / f"{f}.npy")
        # key.json last: its presence marks a complete cache entry.
        atomic_write_text(tmp / "key.json", json.dumps(key, sort_keys=True, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
