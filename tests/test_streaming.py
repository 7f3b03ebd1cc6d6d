"""Image folders decoded per batch (`ctxenc.data.streaming`): the same images as the decoded cache, by choice or when the disk is too small."""

import errno
import os
import shutil
from collections import namedtuple

import numpy as np
import pytest
import torch
from PIL import Image

from ctxenc.checkpoint import load_checkpoint
from ctxenc.data import load_dataset
from ctxenc.data.imagefolder import load
from ctxenc.data.streaming import StreamedImages
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.io import cache_root
from ctxenc.pretext import pretext_spec
from tests.real_formats import write_imagefolder


@pytest.fixture
def folder(tmp_path):
    """JPEG and PNG files (RGB, L, RGBA, P) of varying sizes, and a BMP (decoded by PIL, not torchvision)."""
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=6, test=False)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (41, 67, 3), dtype=np.uint8)).save(root / "train" / "b" / "b_100.bmp")
    return root


def decoded_entries() -> list:
    return sorted((cache_root() / "decoded").glob("[!.]*"))


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_the_cached_ones_bit_for_bit(folder, workers, capsys):
    cached = load("imagefolder", "train", folder, load_size=20).images
    assert isinstance(cached, torch.Tensor) and len(decoded_entries()) == 1
    streamed = load("imagefolder", "train", folder, load_size=20, cache=False).images
    streamed = StreamedImages(streamed.paths, streamed.size, streamed.decode, workers=workers)
    assert streamed.shape == cached.shape == (13, 3, 20, 20) and streamed.dtype == torch.uint8 and len(streamed) == 13
    rows = torch.tensor([12, 3, 0, 7, 3, 11, 5])  # any order, a row twice, the BMP (12)
    assert torch.equal(streamed[rows], cached[rows])
    assert torch.equal(streamed[2:9], cached[2:9]) and torch.equal(streamed[12], cached[12])
    out = torch.full((len(rows), 3, 20, 20), 7, dtype=torch.uint8)
    assert streamed.read(rows, out=out) is out and torch.equal(out, cached[rows])


def test_cache_false_streams_and_says_so_in_one_line(folder, capsys):
    data = load_dataset({"name": "imagefolder", "cache": False}, "train", folder, load_size=20)
    assert isinstance(data.images, StreamedImages) and torch.equal(data.labels, torch.tensor([0] * 6 + [1] * 7))
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"ctxenc: imagefolder {(folder / 'train').resolve()}: streaming (decoding per batch in ")
    assert line.endswith("): cache: false.")
    assert decoded_entries() == []  # nothing decoded ahead
    assert isinstance(load_dataset("imagefolder", "train", folder, load_size=20).images, torch.Tensor)  # the default: cached


def test_a_misspelled_option_names_the_valid_one(folder):
    with pytest.raises(UserError, match="did you mean 'cache'"):
        load_dataset({"name": "imagefolder", "cahce": False}, "train", folder, load_size=20)


@pytest.fixture
def small_disk(monkeypatch):
    """A disk with 1 MB free: the cache's up-front reservation fails as on a full disk."""
    usage = namedtuple("usage", "total used free")

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))


def test_a_disk_too_small_for_the_cache_streams_instead_of_refusing(folder, small_disk, capsys):
    images = load("imagefolder", "train", folder, load_size=300).images  # 13 x 270 kB: 3.5 MB
    assert isinstance(images, StreamedImages) and images.shape == (13, 3, 300, 300)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(": the decoded cache needs 0.0 GB, the disk has 0.0 GB free.") and "streaming" in line
    assert decoded_entries() == [] and not list((cache_root() / "decoded").glob(".*.partial"))


def test_other_refusals_still_stand(folder, capsys):
    (folder / "train" / "a" / "a_000.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read image .*a_000.png"):
        load("imagefolder", "train", folder, load_size=20)
    assert "streaming" not in capsys.readouterr().err


def test_a_bad_image_met_by_a_worker_is_one_sentence(folder):
    images = load("imagefolder", "train", folder, load_size=20, cache=False).images
    (folder / "train" / "a" / "a_003.jpg").write_bytes(b"not an image")
    with pytest.raises(UserError) as err:
        StreamedImages(images.paths, images.size, images.decode, workers=2)[torch.arange(6)]
    assert str(err.value).startswith("cannot read image ") and "a_003.jpg" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_pretraining_on_a_streamed_folder_gives_the_cached_runs_weights(folder, tmp_path, capsys):
    spec = pretext_spec("context_encoder")
    train = TrainConfig(batch_size=4, max_steps=4, augment=True, seed=3)  # 3 steps per epoch: an epoch boundary too
    runs = {}
    for name, dataset in (("cached", "imagefolder"), ("streamed", {"name": "imagefolder", "cache": False})):
        path = pretrain(dataset, {"name": "small"}, spec, train, tmp_path / name, folder, progress=False)
        runs[name] = load_checkpoint(path)["model"]
        assert ("streaming (decoding per batch" in capsys.readouterr().err) == (name == "streamed")
    assert runs["cached"].keys() == runs["streamed"].keys()
    assert all(torch.equal(runs["cached"][k], runs["streamed"][k]) for k in runs["cached"])
