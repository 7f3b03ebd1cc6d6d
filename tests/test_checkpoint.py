import pytest
import torch

from ctxenc.checkpoint import load_checkpoint, load_encoder, rebuild_model
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.pretext import pretext_spec


@pytest.fixture
def checkpoint(fmnist_root, tmp_path):
    return pretrain("fashion_mnist", {"name": "small"}, pretext_spec("context_encoder"), TrainConfig(batch_size=32, max_steps=4),
                    tmp_path / "run", fmnist_root, progress=False)


def test_round_trip_rebuilds_the_same_encoder(checkpoint, fmnist_root):
    encoder, ckpt = load_encoder(checkpoint)
    assert not encoder.training
    assert ckpt["encoder"] == {"name": "small", "in_channels": 1, "input_size": 32}
    model = rebuild_model(ckpt).eval()
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(encoder(x), model.encoder(x), rtol=0, atol=0)
    assert (checkpoint.parent / "log.jsonl").read_text().count("\n") >= 1


def test_training_is_deterministic(fmnist_root, tmp_path):
    args = ("fashion_mnist", {"name": "small"}, pretext_spec("context_encoder"), TrainConfig(batch_size=32, max_steps=3, seed=5))
    a = load_checkpoint(pretrain(*args, tmp_path / "a", fmnist_root, progress=False))["model"]
    b = load_checkpoint(pretrain(*args, tmp_path / "b", fmnist_root, progress=False))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    with pytest.raises(UserError, match="not a readable ctxenc checkpoint"):
        load_encoder(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a ctxenc checkpoint"):
        load_encoder(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        load_encoder(tmp_path / "missing.pt")


def test_mismatched_weights_fail_strictly(checkpoint, tmp_path):
    ckpt = load_checkpoint(checkpoint)
    ckpt["encoder"]["widths"] = [16, 32, 64]
    ckpt.pop("format")
    from ctxenc.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "mismatch.pt", ckpt)
    with pytest.raises(UserError, match="do not fit its encoder .small.: stages.conv1.0.weight has shape"):
        load_encoder(tmp_path / "mismatch.pt")


def test_checkpoints_hold_cpu_tensors_wherever_they_trained(tmp_path, monkeypatch):
    """Tensors on a GPU (fake ones: a shape and a device, no data), nested as a snapshot nests
    them, are written as CPU tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ctxenc.checkpoint import save_checkpoint

    written = []
    monkeypatch.setattr(torch, "save", lambda payload, f: written.append(payload))
    with FakeTensorMode():
        gpu = torch.zeros(2, 3, device="cuda")
        save_checkpoint(tmp_path / "last.pt", {"model": {"w": gpu}, "optimizers": {"g": {"state": {0: {"step": gpu[0, 0]}}}},
                                               "rng": [gpu, (gpu,)], "step": 3})
    tensors = [written[0]["model"]["w"], written[0]["optimizers"]["g"]["state"][0]["step"], *written[0]["rng"][:1],
               *written[0]["rng"][1]]
    assert gpu.device.type == "cuda" and [t.device.type for t in tensors] == ["cpu"] * 4
    assert written[0]["step"] == 3 and written[0]["format"].startswith("ctxenc-checkpoint")


def test_checkpoints_say_where_they_trained(checkpoint):
    provenance = load_checkpoint(checkpoint)["provenance"]
    assert (provenance["device"], provenance["gpu"], provenance["amp"]) == ("cpu", "", False)


def test_a_run_folder_names_its_checkpoint(checkpoint, tmp_path):
    folder = checkpoint.parent
    assert load_checkpoint(folder)["pretrain_steps"] == load_checkpoint(checkpoint)["pretrain_steps"]
    encoder, _ = load_encoder(folder)
    assert not encoder.training
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is a folder without a checkpoint.pt"):
        load_checkpoint(tmp_path / "empty")
