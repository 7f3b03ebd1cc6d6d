import gzip

import pytest
import torch

from ctxenc.data import load_dataset, to_model_input
from ctxenc.errors import UserError
from tests.conftest import write_idx


def test_reads_idx_fixture(fmnist_root):
    train = load_dataset("fashion_mnist", "train", fmnist_root)
    test = load_dataset("fashion_mnist", "test", fmnist_root)
    assert train.images.shape == (256, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.labels.shape == (64,) and test.labels.dtype == torch.int64
    assert train.num_classes == 10


def test_environment_variable_is_a_root(fmnist_root, monkeypatch):
    monkeypatch.setenv("CTXENC_DATA", str(fmnist_root))
    assert len(load_dataset("fashion_mnist", "test")) == 64


def test_bad_magic_number(fmnist_root):
    write_idx(fmnist_root / "t10k-images-idx3-ubyte.gz", torch.zeros(64, 28, 28).numpy(), 2049)
    with pytest.raises(UserError, match="magic number 2049, expected 2051"):
        load_dataset("fashion_mnist", "test", fmnist_root)


def test_truncated_file(fmnist_root):
    path = fmnist_root / "t10k-images-idx3-ubyte.gz"
    data = gzip.open(path).read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-100])
    with pytest.raises(UserError, match="truncated"):
        load_dataset("fashion_mnist", "test", fmnist_root)


def test_corrupt_gzip(fmnist_root):
    (fmnist_root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="corrupt"):
        load_dataset("fashion_mnist", "test", fmnist_root)


def test_labels_and_images_must_match(fmnist_root):
    write_idx(fmnist_root / "t10k-labels-idx1-ubyte.gz", torch.zeros(10).numpy(), 2049)
    with pytest.raises(UserError, match="64 test images but 10 labels"):
        load_dataset("fashion_mnist", "test", fmnist_root)


def test_missing_data_names_three_ways(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("fashion_mnist", "train", tmp_path)
    message = str(err.value)
    assert "--data-root" in message and "apt-get install dataset-fashion-mnist" in message and "--download" in message


def test_to_model_input_pads_and_scales():
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    x = to_model_input(images, 32)
    assert x.shape == (2, 1, 32, 32)
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 2, 2] == 1.0 and x[0, 0, 29, 29] == 1.0 and x[0, 0, 30, 30] == -1.0
