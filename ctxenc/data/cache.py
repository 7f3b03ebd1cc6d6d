"""Decode image files once into memory-mapped .npy arrays, keyed by what was decoded.

VOC and image folders hold JPEG/PNG files of any size; decoding them takes minutes and the
decoded images (10k VOC images at 256 px: 2 GB) need not sit in memory. The first load decodes
every file (in threads: PIL releases the GIL while decoding and resizing) into `.npy` files under
the cache folder; later loads memory-map them, so the operating system pages in only the images
a batch touches. The key holds each file's path, size and modification time, so an edited or
replaced file is decoded again.

Cache folder: `$CTXENC_CACHE`, else `~/.cache/ctxenc`.
"""

from __future__ import annotations

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

from ctxenc.io import cache_root


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
    if not (folder / "key.json").is_file():
        _decode_into(folder, key, count, fields, decode, desc)
    return {field: np.load(folder / f"{field}.npy", mmap_mode="c") for field in fields}


def _decode_into(folder: Path, key: dict, count: int, fields: dict, decode: Callable, desc: str) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        arrays = {f: np.lib.format.open_memmap(tmp / f"{f}.npy", mode="w+", dtype=dtype, shape=(count, *shape))
                  for f, (shape, dtype) in fields.items()}

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
        # key.json last: its presence marks a complete cache entry.
        (tmp / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same entry first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
