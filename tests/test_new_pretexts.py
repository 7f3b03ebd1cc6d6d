"""The pretexts the paper compares context encoders with: head shapes, hand-checked pieces, a loss
that falls on a tiny fixed batch, and an interrupted run that resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ctxenc.checkpoint import load_checkpoint
from ctxenc.device import grad_scaler
from ctxenc.encoders import create_encoder
from ctxenc.engine import TrainConfig, pretrain, train_loop
from ctxenc.errors import UserError
from ctxenc.pretext import PRETEXTS, PretrainData, StepContext, build_pretext, pretext_spec


def build(name: str, channels: int = 1, size: int = 32, num_classes=None, task=None, **options):
    torch.manual_seed(0)
    encoder = create_encoder("small", in_channels=channels, input_size=size)
    data = PretrainData(fill=torch.zeros(channels), num_classes=num_classes, task=task)
    return build_pretext(pretext_spec({"name": name, **options}), encoder, data)


def step_context(model, batch_size: int, lr: float = 2e-3) -> StepContext:
    optimizers = model.optimizers(TrainConfig(lr=lr))
    return StepContext(optimizers, torch.device("cpu"), False, torch.Generator().manual_seed(0), batch_size,
                       grad_scaler(torch.device("cpu"), False), Path("unused"))


def bar_images(n: int = 16, channels: int = 1, size: int = 32) -> torch.Tensor:
    """(n, C, S, S) in [-1, 1]: noise plus a bright bar near the top, so which way is up is learnable."""
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(n, channels, size, size, generator=gen) * 0.6 - 1
    images[:, :, 3:6, 4 : size - 8] = 1
    return images


def train(model, batch: dict, steps: int = 20, lr: float = 2e-3) -> None:
    ctx = step_context(model, len(batch["images"]), lr)
    model.train()
    for step in range(steps):
        ctx.step = step
        model.train_step(batch, ctx)


def crash_at(monkeypatch, cls, step: int) -> None:
    """Make `cls.train_step` die at `step`, after the loop's snapshot of the steps before it."""
    original = cls.train_step

    def dying(self, batch, ctx):
        if ctx.step == step:
            raise KeyboardInterrupt("simulated crash")
        return original(self, batch, ctx)

    monkeypatch.setattr(cls, "train_step", dying)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_resume_round_trip(name: str, fmnist_root, tmp_path, monkeypatch) -> None:
    """4 steps uninterrupted == 2 steps, a crash, then --resume to 4, bit for bit (CPU)."""
    spec = pretext_spec({"name": name})
    train = TrainConfig(batch_size=8, max_steps=4, checkpoint_every=2, log_every=1, seed=5)
    run = lambda out, resume=False: pretrain("fashion_mnist", {"name": "small"}, spec, train, tmp_path / out, fmnist_root,
                                             limit=64, progress=False, resume=resume)
    clean = load_checkpoint(run("clean"))
    with monkeypatch.context() as patch:
        crash_at(patch, PRETEXTS[name], 2)
        with pytest.raises(KeyboardInterrupt):
            run("resumed")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 2
    resumed = load_checkpoint(run("resumed", resume=True))
    assert resumed["pretrain_steps"] == clean["pretrain_steps"] == 4
    assert_same_weights(clean["model"], resumed["model"])
    assert losses(tmp_path / "clean" / "log.jsonl") == losses(tmp_path / "resumed" / "log.jsonl")


def losses(log: Path) -> list[dict]:
    """The logged metrics without the timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "images_per_s")}
            for line in log.read_text().splitlines()]


# --- rotation ---------------------------------------------------------------------------------

def test_rotate_turns_each_image_by_its_own_quarter_turns():
    from ctxenc.pretext.rotation import rotate

    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).repeat(4, 1, 1, 1)
    turned = rotate(image, torch.tensor([0, 1, 2, 3]))[:, 0]
    assert turned[0].tolist() == [[1, 2], [3, 4]]
    assert turned[1].tolist() == [[2, 4], [1, 3]]  # 90 degrees counter-clockwise
    assert turned[2].tolist() == [[4, 3], [2, 1]]
    assert turned[3].tolist() == [[3, 1], [4, 2]]


def test_rotation_head_and_falling_loss():
    model = build("rotation")
    images = bar_images()
    every = torch.arange(4).repeat_interleave(len(images))  # all four rotations of every image

    def loss() -> float:
        with torch.no_grad():
            return model.forward_loss(images.repeat(4, 1, 1, 1), every)["loss"].item()

    assert model(images).shape == (16, 4)
    before = loss()
    train(model, {"images": images})
    assert loss() < 0.5 * before


def test_rotation_resumes_to_the_same_weights(fmnist_root, tmp_path, monkeypatch):
    assert_resume_round_trip("rotation", fmnist_root, tmp_path, monkeypatch)
