"""Shared fixtures: a tiny Fashion-MNIST written in the real IDX .gz format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_fashion_mnist(root: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """Class k is a bright horizontal bar at row 2 + 2k plus noise: learnable, so probes beat chance."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 + 2 * k : 4 + 2 * k, 4:24] = 255
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images, 2051)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels, 2049)
    return root


@pytest.fixture
def fmnist_root(tmp_path) -> Path:
    return make_fashion_mnist(tmp_path / "fmnist")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Decoded-image caches go to the test's own folder, never to the user's ~/.cache."""
    monkeypatch.setenv("CTXENC_CACHE", str(tmp_path / "cache"))


def pytest_collection_modifyitems(items):
    """Slow tests first (in collection order otherwise): with two pytest-xdist workers dealing one
    test at a time (`make test`: --maxschedchunk 1), a long test dealt out last would leave the
    other worker idle until it ends. (xdist's default deals a first chunk of a quarter of each
    worker's share: every slow test would land in the first worker's.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
