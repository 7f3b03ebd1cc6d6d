"""The Python API (`ctxenc.load_encoder`, `ctxenc.extract_features`) and its page, docs/python.md."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

import ctxenc
from ctxenc.cli import main
from ctxenc.data import eval_splits, load_dataset
from ctxenc.errors import UserError
from ctxenc.evaluation import prepared_split
from ctxenc.evaluators.linear_probe import LinearProbeConfig, linear_probe
from tests.conftest import make_fashion_mnist

probe_module = sys.modules["ctxenc.evaluators.linear_probe"]  # the module: the package exports the function by that name

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A context encoder pretrained for 2 steps (its BatchNorm statistics are far from the data's) and its data."""
    base = tmp_path_factory.mktemp("api")
    data = make_fashion_mnist(base / "fmnist", n_train=128, n_test=32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CTXENC_CACHE", str(base / "cache"))
        assert main(["pretrain", "--pretext", "context_encoder", "--data-root", str(data), "--max-steps", "2",
                     "--batch-size", "32", "--out", str(base / "ce"), "--no-progress"]) == 0
    return base / "ce", data


def raw_split(data: Path, split: str) -> torch.Tensor:
    """The split's stored uint8 images (N, 1, 28, 28): what a user holds."""
    return load_dataset("fashion_mnist", split, str(data)).images


def test_extract_features_gives_the_matrices_the_probes_fit_on(run, monkeypatch):
    folder, data = run
    encoder = ctxenc.load_encoder(folder)  # a run folder
    train_split, test_split = eval_splits("fashion_mnist")
    train = prepared_split("fashion_mnist", train_split, str(data), 32, None)  # exactly what `evaluate` hands the probe
    test = prepared_split("fashion_mnist", test_split, str(data), 32, None)
    fitted = []  # every matrix the probe extracts, in order: train and test for each stage (copies:
    real = probe_module.extract_features  # the probe standardises its matrices in place)

    def extract(*args, **kwargs):
        features = real(*args, **kwargs)
        fitted.append(features.clone())
        return features

    monkeypatch.setattr(probe_module, "extract_features", extract)
    linear_probe(encoder, train, test, LinearProbeConfig(stages=("conv2", "conv3"), max_iter=1, weight_decays=(1e-3,)))
    assert len(fitted) == 4

    raw_train, raw_test = raw_split(data, train_split), raw_split(data, test_split)
    assert raw_train.dtype == torch.uint8 and raw_train.shape[-1] == 28  # padded to 32 by the API, as by `evaluate`
    for i, stage in enumerate(("conv2", "conv3")):  # the layer-wise probe
        assert_close(ctxenc.extract_features(encoder, raw_train, stage=stage), fitted[2 * i])
        assert_close(ctxenc.extract_features(encoder, raw_test, stage=stage, recalibrate_bn=raw_train), fitted[2 * i + 1])
    # The defaults are the linear probe's: the last stage, 2 x 2 grid, BatchNorm recalibrated.
    assert_close(ctxenc.extract_features(encoder, raw_train), fitted[2])
    assert fitted[2].shape == (128, 128 * 4)
    # Without recalibration, the checkpoint's statistics: not the features the protocols score.
    stale = ctxenc.extract_features(encoder, raw_train, recalibrate_bn=False)
    assert not torch.allclose(stale, fitted[2], atol=1e-3)
    assert_close(stale, encoder.pooled(train[0].to("cpu"), grid=2), rtol=1e-5, atol=1e-5)


def test_float_input_and_the_input_contract(run):
    folder, data = run
    encoder = ctxenc.load_encoder(folder / "checkpoint.pt")  # the file works as well as its folder
    raw = raw_split(data, "test")  # 32 images: enough to recalibrate on
    as_float = raw.float() / 127.5 - 1  # 28 px: not yet the model's input
    with pytest.raises(UserError, match="float images must already be the encoder's 32 x 32 input"):
        ctxenc.extract_features(encoder, as_float)
    padded = torch.nn.functional.pad(as_float, (2, 2, 2, 2), value=-1.0)  # to_model_input's padding
    assert_close(ctxenc.extract_features(encoder, padded), ctxenc.extract_features(encoder, raw))
    assert_close(ctxenc.extract_features(encoder, raw.numpy()), ctxenc.extract_features(encoder, raw))  # numpy works too
    with pytest.raises(UserError, match=r"must lie in \[-1, 1\].*x / 127.5 - 1"):
        ctxenc.extract_features(encoder, padded * 127.5 + 127.5)  # 0-255 as floats
    with pytest.raises(UserError, match=r"\(N, C, H, W\) with C = 1 channels first, got shape \(32, 28, 28, 1\)"):
        ctxenc.extract_features(encoder, raw.permute(0, 2, 3, 1))  # channels last
    with pytest.raises(UserError, match="encoder has no stage 'conv9'; its stages are conv1, conv2, conv3"):
        ctxenc.extract_features(encoder, raw, stage="conv9")
    assert ctxenc.extract_features(encoder, raw, stage="conv1", grid=1).shape == (32, 32)
    # A few images: not enough to estimate BatchNorm statistics from, unless told where to.
    with pytest.raises(UserError, match=r"recalibrating BatchNorm on 3 image\(s\) \(images\).*recalibrate_bn=False"):
        ctxenc.extract_features(encoder, raw[:3])
    assert_close(ctxenc.extract_features(encoder, raw[:3], recalibrate_bn=raw), ctxenc.extract_features(encoder, raw)[:3])


def test_load_encoder_wants_a_checkpoint_or_a_run_folder(tmp_path):
    with pytest.raises(UserError, match="is a folder without a checkpoint.pt"):
        ctxenc.load_encoder(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        ctxenc.load_encoder(tmp_path / "nope.pt")


def test_import_ctxenc_stays_light():
    code = "import sys, ctxenc; assert 'torch' not in sys.modules; print('ok')"  # the API itself loads on first use
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "ok"


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """[(language, code)] of the fenced blocks tagged python or sh, in order."""
    return re.findall(r"^```(python|sh)\n(.*?)^```", markdown, flags=re.S | re.M)


def test_the_examples_of_docs_python_md_run(run, tmp_path, monkeypatch, capsys):
    """docs/python.md's ```python blocks, in order and in one namespace, and the `ctxenc` lines of
    its ```sh blocks, beside runs/ce (a run folder) and photo.png."""
    folder, data = run
    blocks = code_blocks((ROOT / "docs" / "python.md").read_text())
    assert [language for language, _ in blocks].count("python") >= 4
    (tmp_path / "runs").mkdir()
    os.symlink(folder, tmp_path / "runs" / "ce")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTXENC_DATA", str(data))  # for the block that loads Fashion-MNIST
    namespace: dict = {}
    for language, code in blocks:
        if language == "python":
            exec(compile(code, "docs/python.md", "exec"), namespace)
        else:
            for line in code.splitlines():
                if line.startswith("ctxenc "):
                    assert main(shlex.split(line)[1:]) == 0, line
    printed = capsys.readouterr().out
    assert "1 32 ['conv1', 'conv2', 'conv3']" in printed and "torch.Size([1, 512])" in printed  # as the comments say
    assert "torch.Size([128, 512]) torch.Size([128, 256])" in printed
    assert "1 [32, 32] [-1.0, 1.0]" in printed
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["encoder.json", "encoder.pt"]
