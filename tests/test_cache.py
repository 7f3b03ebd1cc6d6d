"""The decoded-image cache and `ctxenc.io`'s verified files heal themselves: a damaged entry is rebuilt with a warning."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ctxenc.data import cache
from ctxenc.data.cache import decoded_arrays
from ctxenc.data.imagefolder import load
from ctxenc.errors import UserError
from ctxenc.io import cache_root, check_problem, file_check, load_verified, save_verified
from tests.real_formats import write_imagefolder


@pytest.fixture
def folder(tmp_path):
    return write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=3, test=False)


def entries():
    return sorted((cache_root() / "decoded").glob("[!.]*"))


def one_warning(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ctxenc: warning: "), err
    return lines[0]


def test_truncated_npy_is_rebuilt_with_one_warning(folder, capsys):
    first = load("imagefolder", "train", folder, load_size=16).images.clone()
    assert capsys.readouterr().err == ""
    (entry,) = entries()
    npy = entry / "images.npy"
    with open(npy, "r+b") as f:
        f.truncate(npy.stat().st_size // 3)  # what a full disk or an interrupted copy leaves
    again = load("imagefolder", "train", folder, load_size=16).images
    line = one_warning(capsys.readouterr().err)
    assert str(entry) in line and "images.npy holds" in line and "decoding the images again" in line
    assert torch.equal(again, first)
    assert check_problem(npy) is None  # the rebuilt entry verifies
    load("imagefolder", "train", folder, load_size=16)
    assert capsys.readouterr().err == ""  # healed: no warning the next time


def test_npy_damaged_at_the_same_size_is_rebuilt(folder, capsys):
    first = load("imagefolder", "train", folder, load_size=16).images.clone()
    (entry,) = entries()
    npy = entry / "images.npy"
    data = bytearray(npy.read_bytes())
    data[-5] ^= 0xFF
    npy.write_bytes(bytes(data))
    assert torch.equal(load("imagefolder", "train", folder, load_size=16).images, first)
    assert "another checksum" in one_warning(capsys.readouterr().err)


def test_entry_without_sidecar_is_rebuilt(folder, capsys):
    """Entries written before sidecars existed cannot be verified: decoded again, once."""
    first = load("imagefolder", "train", folder, load_size=16).images.clone()
    (entry,) = entries()
    (entry / "images.npy.check.json").unlink()
    assert torch.equal(load("imagefolder", "train", folder, load_size=16).images, first)
    assert "images.npy.check.json is missing" in one_warning(capsys.readouterr().err)


def test_changed_source_image_gets_a_new_entry(folder, capsys):
    from PIL import Image

    first = load("imagefolder", "train", folder, load_size=16).images.clone()
    path = sorted((folder / "train" / "a").glob("*.png"))[0]
    # Replaced as rsync, mv and most tools replace a file: written beside it, renamed over it.
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(path.with_suffix(".tmp.png"))
    os.replace(path.with_suffix(".tmp.png"), path)
    second = load("imagefolder", "train", folder, load_size=16).images
    assert len(entries()) == 2 and "changed since it was last listed" in capsys.readouterr().err
    assert not torch.equal(second, first) and bool((second[0] == 200).all())
    assert torch.equal(second[1:], first[1:])


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


FIELDS = {"images": ((3, 4, 4), "uint8"), "maps": ((4, 4), "uint8")}
KEY = {"reader": "test", "n": 50}


def item(i: int) -> dict:
    """A distinct, deterministic item per index."""
    rng = np.random.default_rng(i)
    return {"images": rng.integers(0, 256, (3, 4, 4), dtype=np.uint8), "maps": np.full((4, 4), i, np.uint8)}


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 items (64 bytes each), synced as soon as they finish."""
    monkeypatch.setattr(cache, "CHUNK_BYTES", 128)
    monkeypatch.setattr(cache, "SYNC_SECONDS", 0.0)


def recorded_items(name_prefix="") -> int:
    (record,) = (cache_root() / "decoded").glob(".*.partial/chunks.txt")
    return 2 * len(record.read_text().splitlines()[1:])


def reference_checksums(tmp_path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("CTXENC_CACHE", str(tmp_path / "reference"))
    decoded_arrays(KEY, 50, FIELDS, item, "reference")
    (entry,) = (tmp_path / "reference" / "decoded").glob("[!.]*")
    monkeypatch.setenv("CTXENC_CACHE", str(tmp_path / "cache"))
    return {f: sha(entry / f"{f}.npy") for f in FIELDS}


def test_interrupted_build_resumes_and_decodes_only_the_rest(tmp_path, monkeypatch, small_chunks, capsys):
    calls = []

    def interrupted(i):
        if len(calls) == 21:
            raise KeyboardInterrupt
        calls.append(i)
        return item(i)

    with pytest.raises(KeyboardInterrupt):
        decoded_arrays(KEY, 50, FIELDS, interrupted, "decode test")
    done = recorded_items()
    assert 0 < done <= 20 and entries() == []
    calls.clear()
    arrays = decoded_arrays(KEY, 50, FIELDS, lambda i: calls.append(i) or item(i), "decode test")
    assert len(calls) == 50 - done and len(set(calls)) == len(calls)  # only the chunks not recorded
    assert f"resuming an interrupted decode, {done} of 50 images already done" in capsys.readouterr().err
    assert arrays["maps"][:, 0, 0].tolist() == list(range(50))
    (entry,) = entries()
    assert {f: sha(entry / f"{f}.npy") for f in FIELDS} == reference_checksums(tmp_path, monkeypatch)
    assert sorted(p.name for p in (cache_root() / "decoded").iterdir()) == [entry.name]  # no partial or lock left


KILLED_BUILD = """
import sys, time
import numpy as np
from ctxenc.data import cache
from tests.test_cache import FIELDS, KEY, item

cache.CHUNK_BYTES, cache.SYNC_SECONDS = 128, 0.0

def slow(i):
    time.sleep(0.02)
    return item(i)

cache.decoded_arrays(KEY, 50, FIELDS, slow, "decode test")
"""


def test_build_killed_with_sigkill_resumes_to_the_same_arrays(tmp_path, monkeypatch, small_chunks):
    env = {**os.environ, "CTXENC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILD], env=env, cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            records = list((tmp_path / "cache" / "decoded").glob(".*.partial/chunks.txt"))
            if records and len(records[0].read_text().splitlines()) > 4:  # header and a few chunks
                break
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    done = recorded_items()
    assert 0 < done < 50, "the child finished before it was killed"
    calls = []
    decoded_arrays(KEY, 50, FIELDS, lambda i: calls.append(i) or item(i), "decode test")
    assert len(calls) <= 50 - done
    (entry,) = entries()
    assert {f: sha(entry / f"{f}.npy") for f in FIELDS} == reference_checksums(tmp_path, monkeypatch)


def test_a_bad_image_removes_the_partial_build(small_chunks):
    def bad(i):
        if i == 7:
            raise UserError("cannot read image x.jpg")
        return item(i)

    with pytest.raises(UserError, match="x.jpg"):
        decoded_arrays(KEY, 50, FIELDS, bad, "decode test")
    assert list((cache_root() / "decoded").glob("*.partial")) == []  # its space is free again


def test_decoding_uses_the_threads_given(monkeypatch, small_chunks):
    seen = set()
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))

    def record(i):
        seen.add(threading.get_ident())
        time.sleep(0.002)
        return item(i)

    decoded_arrays(KEY, 50, FIELDS, record, "decode test")
    assert len(seen) == 3


def test_save_then_load_verified(tmp_path, capsys):
    path = tmp_path / "x" / "train.pt"
    save_verified(path, lambda f: torch.save({"a": torch.arange(5)}, f))
    assert json.loads((tmp_path / "x" / "train.pt.check.json").read_text()) == file_check(path)
    loaded = load_verified(path, lambda p: torch.load(p, weights_only=True))
    assert torch.equal(loaded["a"], torch.arange(5)) and capsys.readouterr().err == ""


def test_load_verified_missing_is_none_without_warning(tmp_path, capsys):
    assert load_verified(tmp_path / "nothing.pt", lambda p: 1) is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", ["truncate", "flip_last_byte", "no_sidecar", "junk_sidecar", "loader_fails"])
def test_load_verified_damaged_is_removed_with_a_warning(damage, tmp_path, capsys):
    path = tmp_path / "train.pt"
    save_verified(path, lambda f: torch.save(torch.zeros(3 * 2**18), f))  # 3 MiB: the checksum skips the middle MiB
    check = tmp_path / "train.pt.check.json"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip_last_byte":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "no_sidecar":
        check.unlink()
    elif damage == "junk_sidecar":
        check.write_text("{")

    def loader(p):
        if damage == "loader_fails":
            raise RuntimeError("PytorchStreamReader failed")
        return torch.load(p, weights_only=True)

    assert load_verified(path, loader, "FashionScenes cache") is None
    line = one_warning(capsys.readouterr().err)
    assert f"the FashionScenes cache {path} is damaged" in line and line.endswith("rebuilding it.")
    assert not path.exists() and not check.exists()


def test_file_check_covers_size_and_both_ends(tmp_path):
    path = tmp_path / "f"
    data = bytearray(os.urandom(3 * 2**20))
    path.write_bytes(bytes(data))
    base = file_check(path)
    assert base["bytes"] == 3 * 2**20
    for where in (0, 2**20 - 1, 2 * 2**20, len(data) - 1):
        changed = bytearray(data)
        changed[where] ^= 1
        path.write_bytes(bytes(changed))
        assert file_check(path) != base, where
    middle = bytearray(data)
    middle[2**20 + 5] ^= 1  # by design (cheap on GB files) the middle is not read
    path.write_bytes(bytes(middle))
    assert file_check(path) == base
