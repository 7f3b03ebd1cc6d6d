import pytest
import torch

from ctxenc.device import autocast, grad_scaler, resolve_device
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.checkpoint import load_checkpoint
from ctxenc.pretext import pretext_spec


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_sentence():
    with pytest.raises(UserError, match="no CUDA device here; use --device cpu"):
        resolve_device("cuda")


def test_unknown_device():
    with pytest.raises(UserError, match="use cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    assert resolve_device(None) == torch.device("cpu")


def test_cpu_mixed_precision_is_bfloat16_without_a_scaler():
    conv = torch.nn.Conv2d(1, 2, 3)
    with autocast(torch.device("cpu"), True):
        assert conv(torch.zeros(1, 1, 5, 5)).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), False):
        assert conv(torch.zeros(1, 1, 5, 5)).dtype == torch.float32
    assert not grad_scaler(torch.device("cpu"), True).is_enabled()


@pytest.mark.slow
def test_amp_pretraining_on_cpu_trains_and_saves_float32(fmnist_root, tmp_path):
    cfg = TrainConfig(batch_size=8, max_steps=2, amp=True)  # bfloat16 convolutions are slow on a CPU
    path = pretrain("fashion_mnist", {"name": "small"}, pretext_spec({"name": "context_encoder", "adversarial": True}), cfg, tmp_path / "amp",
                    fmnist_root, progress=False, device="cpu")
    ckpt = load_checkpoint(path)
    assert ckpt["train"]["amp"] is True
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_cuda_turns_on_the_autotuner_and_tf32_matmuls_and_the_cpu_leaves_them(monkeypatch):
    flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    try:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = False, False
        resolve_device("cpu")
        assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    finally:  # process-wide flags: the tests after this one find them as they were
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = flags
