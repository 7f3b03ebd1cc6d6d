"""`ctxenc export`: a plain state_dict and a JSON file that loads without ctxenc's checkpoint format."""

import json

import pytest
import torch
from torch.testing import assert_close

from ctxenc.checkpoint import load_encoder
from ctxenc.cli import main
from ctxenc.encoders import create_encoder


def pretrain(fmnist_root, out, *args):
    assert main(["pretrain", "--data-root", str(fmnist_root), "--batch-size", "16", "--out", str(out), "--no-progress", *args]) == 0
    return out


def test_export_a_small_encoder(fmnist_root, tmp_path, capsys):
    run = pretrain(fmnist_root, tmp_path / "ce", "--pretext", "context_encoder", "--max-steps", "1")
    assert main(["export", str(run), "--out", str(tmp_path / "x")]) == 0  # a run folder
    assert "encoder.pt" in capsys.readouterr().out
    meta = json.loads((tmp_path / "x" / "encoder.json").read_text())
    assert meta["encoder"] == {"name": "small", "in_channels": 1, "input_size": 32}
    assert meta["input"]["channels"] == 1 and meta["input"]["size"] == [32, 32] and meta["input"]["range"] == [-1.0, 1.0]
    assert meta["stages"]["conv3"] == [128, 4, 4] and meta["pretext"]["label"] == "context_encoder/random_region/l2"
    state = torch.load(tmp_path / "x" / "encoder.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    exported = create_encoder(**meta["encoder"])
    exported.load_state_dict(state, strict=True)
    original, _ = load_encoder(run / "checkpoint.pt")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert_close(exported.eval()(x), original(x))


def test_a_timm_encoder_loads_into_timm_itself(fmnist_root, tmp_path):
    timm = pytest.importorskip("timm")
    # `random` writes its initialisation without training: a timm checkpoint in a second.
    run = pretrain(fmnist_root, tmp_path / "r18", "--pretext", "random", "--encoder", "timm:resnet18", "--input-size", "32")
    assert main(["export", str(run / "checkpoint.pt"), "--out", str(tmp_path / "x")]) == 0
    meta = json.loads((tmp_path / "x" / "encoder.json").read_text())
    state = torch.load(tmp_path / "x" / "encoder.pt", weights_only=True)
    assert not any(k.startswith("net.") for k in state)  # timm's names, not ctxenc's wrapper's
    assert meta["timm"]["create_model"] == {"model_name": "resnet18", "pretrained": False, "features_only": True, "in_chans": 1}

    original, _ = load_encoder(run / "checkpoint.pt")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    features = timm.create_model(**meta["timm"]["create_model"]).eval()
    features.load_state_dict(state, strict=True)
    for ours, theirs in zip(original.forward_features(x).values(), features(x)):
        assert_close(theirs, ours)
    # A ResNet has nothing after layer4 but the pooling: the classifier-free model takes the weights too.
    pooled = timm.create_model(**meta["timm"]["create_model_pooled"]).eval()
    pooled.load_state_dict(state, strict=True)
    assert_close(pooled(x), original.pooled(x))


def test_export_refuses_what_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a readable ctxenc checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x" / "encoder.pt").exists()
