"""The pretexts the paper compares context encoders with: head shapes, hand-checked pieces, a loss
that falls on a tiny fixed batch, and an interrupted run that resumes to the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

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

    def run(out: str, resume: bool = False) -> Path:
        return pretrain("fashion_mnist", {"name": "small"}, spec, train, tmp_path / out, fmnist_root, limit=64,
                        progress=False, resume=resume)

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


# --- context prediction -----------------------------------------------------------------------

def test_context_prediction_grid_scaled_from_the_paper():
    from ctxenc.pretext.context_prediction import ContextPredictionConfig, PatchGrid

    grid = PatchGrid.for_size(32, ContextPredictionConfig())
    assert (grid.patch, grid.gap, grid.jitter, grid.slack) == (8, 3, 1, 0)  # 3 x 8 + 2 x 3 + 2 x 1 = 32
    assert PatchGrid.for_size(128, ContextPredictionConfig()) == PatchGrid(128, 32, 14, 2)
    assert PatchGrid.for_size(32, ContextPredictionConfig(patch_px=6, gap_px=2, jitter_px=0)).slack == 10
    assert PatchGrid.for_size(32, ContextPredictionConfig(patch_px=10)) == PatchGrid(32, 10, 0, 1)  # 1 px per gap left
    with pytest.raises(UserError, match="needs 36 px, more than the 32 px input"):
        PatchGrid.for_size(32, ContextPredictionConfig(patch_px=10, gap_px=2))


def test_context_prediction_patches_lie_apart_inside_the_image_where_the_label_says():
    from ctxenc.pretext.context_prediction import NEIGHBOURS, ContextPredictionConfig, PatchGrid

    grid = PatchGrid.for_size(32, ContextPredictionConfig(patch_px=6, gap_px=2, jitter_px=1))  # slack 8: offsets too
    draws = grid.sample(2000, torch.Generator().manual_seed(0))
    centre, neighbour = grid.corners(draws)
    for corners in (centre, neighbour):
        assert corners.min() >= 0 and corners.max() <= 32 - 6
    cells = torch.tensor(NEIGHBOURS)[draws[:, 0]] - 1  # (-1, 0 or 1) rows and columns from the centre
    shift = neighbour - centre
    across = cells != 0
    assert torch.equal(torch.sign(shift[across]), cells[across])  # the neighbour lies where its label says
    assert shift[across].abs().min() == 6 + 2 - 2 and shift[across].abs().max() == 6 + 2 + 2  # patch + gap -+ both jitters
    assert shift[~across].abs().max() == 2  # same row or column: only the jitters differ
    assert len(draws[:, 0].unique()) == 8 and draws[:, 5:].max() == grid.slack


def test_neighbour_cells_are_the_table_in_reading_order():
    from ctxenc.pretext.context_prediction import NEIGHBOURS, neighbour_cells

    assert neighbour_cells(torch.arange(8)).tolist() == [list(cell) for cell in NEIGHBOURS]


def test_crop_cuts_each_image_at_its_own_corner():
    from ctxenc.pretext.context_prediction import crop

    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    patches = crop(images, torch.tensor([[0, 1], [5, 2]]), 3)
    assert patches.shape == (2, 3, 3, 3)
    assert torch.equal(patches[0], images[0, :, 0:3, 1:4])
    assert torch.equal(patches[1], images[1, :, 5:8, 2:5])


def test_context_prediction_refuses_patches_too_small_for_the_encoder_unless_resized():
    with pytest.raises(UserError, match="cannot run on the grid's 4 px patches; use -o resize_patches=true"):
        build("context_prediction", patch_px=4)  # the small encoder halves 3 times: 4 -> 2 -> 1 -> 0
    model = build("context_prediction", patch_px=4, resize_patches=True)
    patch = torch.rand(2, 1, 4, 4)
    assert model(patch, patch).shape == (2, 8)
    assert model.label(model.cfg) == "context_prediction/patch_px=4/resize_patches=True"


def ramp_images(n: int = 16, size: int = 32) -> torch.Tensor:
    """(n, 1, S, S) in [-1, 1]: a diagonal brightness ramp plus noise, so positions are learnable."""
    gen = torch.Generator().manual_seed(2)
    coords = torch.arange(size, dtype=torch.float32) / (size - 1)
    ramp = (coords.view(1, size) + 2 * coords.view(size, 1)) / 3
    return (ramp + 0.3 * torch.rand(n, 1, size, size, generator=gen)).clamp(0, 1) * 2 - 1


def test_context_prediction_head_and_falling_loss():
    model = build("context_prediction")
    images = ramp_images()
    draws = model.grid.sample(64, torch.Generator().manual_seed(3))

    def loss() -> float:
        with torch.no_grad():
            return model.forward_loss(images.repeat(4, 1, 1, 1), draws)["loss"].item()

    patch = torch.zeros(16, 1, 8, 8)
    assert model(patch, patch).shape == (16, 8)
    before = loss()
    train(model, {"images": images})
    assert loss() < 0.5 * before


def test_context_prediction_resumes_to_the_same_weights(fmnist_root, tmp_path, monkeypatch):
    assert_resume_round_trip("context_prediction", fmnist_root, tmp_path, monkeypatch)


# --- colorization -----------------------------------------------------------------------------

def test_luma_by_hand():
    from ctxenc.pretext.colorization import luma

    red, blue, white = [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]
    images = torch.tensor([red, blue, white]).view(3, 3, 1, 1)
    grey = luma(images)
    assert grey.shape == (3, 3, 1, 1) and torch.equal(grey[:, 0], grey[:, 2])  # replicated
    torch.testing.assert_close(grey[:, 0].flatten(), torch.tensor([0.299 - 0.587 - 0.114, -0.299 - 0.587 + 0.114, 1.0]))
    assert (images - grey).abs().max() <= 2.0  # the chroma the doubled Tanh range must cover (blue: 1.772)


def colour_images(n: int = 16, size: int = 32) -> torch.Tensor:
    """(n, 3, S, S) in [-1, 1]: a reddish top half over a bluish bottom half, noisy brightness."""
    gen = torch.Generator().manual_seed(4)
    images = torch.empty(n, 3, size, size)
    images[:, :, : size // 2] = torch.tensor([0.8, -0.6, -0.6]).view(1, 3, 1, 1)
    images[:, :, size // 2 :] = torch.tensor([-0.6, -0.2, 0.8]).view(1, 3, 1, 1)
    return (images + 0.2 * torch.rand(n, 1, size, size, generator=gen)).clamp(-1, 1)


def test_colorization_sees_only_grey_and_its_loss_falls():
    model = build("colorization", channels=3)
    images = colour_images()
    out = model.forward_loss(images)
    assert out["prediction"].shape == images.shape
    # Another colouring of the same luma gives the same prediction: the encoder never sees colour.
    recoloured = images + 0.1 * torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1)  # zero luma shift
    torch.testing.assert_close(model.forward_loss(recoloured)["prediction"], out["prediction"])

    def loss() -> float:
        with torch.no_grad():
            return model.forward_loss(images)["loss"].item()

    before = loss()
    train(model, {"images": images})
    assert loss() < 0.5 * before


def test_colorization_refuses_grey_data():
    with pytest.raises(UserError, match="colorization needs colour \\(RGB\\) images, but these have 1 channel;"):
        build("colorization", channels=1)


def test_colorization_resumes_to_the_same_weights(tmp_path, monkeypatch):
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    train = TrainConfig(batch_size=8, max_steps=4, checkpoint_every=2, log_every=1, seed=5)
    meta = {"encoder": {"name": "small"}, "pretext": {"name": "colorization"}, "train": vars(train), "data": {}}

    def run(out: str, resume: bool = False) -> dict:
        model = build("colorization", channels=3)
        (tmp_path / out).mkdir(exist_ok=True)
        train_loop(model, images, None, train, tmp_path / out, meta, progress=False, resume=resume)
        return model.state_dict()

    clean = run("clean")
    with monkeypatch.context() as patch:
        crash_at(patch, PRETEXTS["colorization"], 2)
        with pytest.raises(KeyboardInterrupt):
            run("resumed")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 2
    assert_same_weights(clean, run("resumed", resume=True))
    assert losses(tmp_path / "clean" / "log.jsonl") == losses(tmp_path / "resumed" / "log.jsonl")


# --- supervised -------------------------------------------------------------------------------

def test_label_losses_by_hand():
    import math

    from ctxenc.pretext.supervised import label_loss

    assert label_loss(torch.zeros(2, 4), torch.tensor([0, 3]), "single_label").item() == pytest.approx(math.log(4))
    labels = torch.tensor([[1.0, 0.0, -1.0]])
    logits = torch.tensor([[0.0, 0.0, 100.0]], requires_grad=True)  # the ignored entry is far off, and must not count
    loss = label_loss(logits, labels, "multi_label")
    assert loss.item() == pytest.approx(2 * math.log(2) / 3)  # log 2 per known entry, over all 3 entries
    loss.backward()
    assert logits.grad[0, 2] == 0 and logits.grad[0, 0] < 0 < logits.grad[0, 1]


def class_bars(n: int = 16, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, 32, 32) in [-1, 1] and int64 (n,) labels: class k is a bright bar at rows 4 + 6k."""
    gen = torch.Generator().manual_seed(7)
    labels = torch.arange(n) % classes
    images = torch.rand(n, 1, 32, 32, generator=gen) * 0.6 - 1
    for i, k in enumerate(labels):
        images[i, :, 4 + 6 * k : 7 + 6 * k, 4:28] = 1
    return images, labels


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_supervised_head_and_falling_loss(task):
    images, labels = class_bars()
    if task == "multi_label":  # multi-hot, with one entry per image ignored
        labels = F.one_hot(labels, 4).float()
        labels[torch.arange(16), (torch.arange(16) + 1) % 4] = -1
    model = build("supervised", num_classes=4, task=task, grid=2)
    assert model(images).shape == (16, 4) and model.head.in_features == 128 * 2 * 2

    def loss() -> float:
        with torch.no_grad():
            return model.forward_loss(images, labels)["loss"].item()

    before = loss()
    train(model, {"images": images, "labels": labels})
    assert loss() < 0.5 * before


def test_supervised_refuses_data_without_class_labels():
    with pytest.raises(UserError, match="supervised pretraining needs single_label or multi_label class labels, but"):
        build("supervised", num_classes=None, task=None)
    with pytest.raises(UserError, match="grid must be 1-8"):
        pretext_spec({"name": "supervised", "grid": 0})


def test_supervised_resumes_to_the_same_weights(fmnist_root, tmp_path, monkeypatch):
    assert_resume_round_trip("supervised", fmnist_root, tmp_path, monkeypatch)
