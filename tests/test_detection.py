"""The detection protocol (Faster R-CNN on an encoder stage) and the box geometry it is fed."""

import importlib
from dataclasses import replace

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ctxenc.data.transforms import fit_boxes, to_model_input
from ctxenc.encoders import create_encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.detection import DetectionConfig, build_detector, default_stage, detection

COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]])  # class 0 red, class 1 green


def squares(n: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images (3, size, size) in [-1, 1], each one coloured square of class i % 2 on a dark noisy background,
    and boxes int16 (n, 2, 6): the square (class, x0, y0, x1, y1, difficult 0) and an unused row."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen) * 0.4 - 1
    boxes = torch.full((n, 2, 6), -1, dtype=torch.int16)
    for i in range(n):
        side = int(torch.randint(size // 3, size // 2 + 1, (1,), generator=gen))
        x0, y0 = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=gen))
        images[i, :, y0 : y0 + side, x0 : x0 + side] = COLOURS[i % 2].view(3, 1, 1)
        boxes[i, 0] = torch.tensor([i % 2, x0, y0, x0 + side - 1, y0 + side - 1, 0])
    return images, boxes


FAST = DetectionConfig(lrs=(1e-2,), max_epochs=2, patience=1, batch_size=8, roi_size=4, rois_per_image=16, proposals=50)


@pytest.fixture(scope="module")
def data():
    return squares(40), squares(16, seed=1)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return create_encoder("small", in_channels=3, input_size=32)


def test_detection_reports_fractions_and_its_choices(encoder, data, tmp_path, monkeypatch):
    module = importlib.import_module("ctxenc.evaluators.detection")  # the package exports the function by that name
    scores, real = [], module.mean_detection_ap  # every validation mAP, then the test's area mAP
    monkeypatch.setattr(module, "mean_detection_ap", lambda *args, **kwargs: scores.append(real(*args, **kwargs)) or scores[-1])
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    out = detection(encoder, *data, replace(FAST, predictions_out=str(tmp_path / "p.pt")))
    for key in ("map", "map_auc", "map_coco", "val_map", "ap/0", "ap/1"):
        assert 0 <= out[key] <= 1, key
    assert out["map"] == pytest.approx((out["ap/0"] + out["ap/1"]) / 2) and out["map_auc"] == scores[-1]
    validations = scores[:-1]  # one per epoch: max_epochs 2 stops no run early
    assert len(validations) == 2 and out["val_map"] == max(validations)
    assert out["epochs"] == 1 + validations.index(max(validations)) and out["max_epochs"] == 2.0  # the first best epoch
    assert out["lr"] == out["lr_min"] == out["lr_max"] == 1e-2 and "lr_margin" not in out  # one rate: nothing to beat
    assert out["lr_drops"] == 0.0  # a plateau can only follow the chosen epoch here
    # The user's encoder is deep-copied before fine-tuning.
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in before.items())
    saved = torch.load(tmp_path / "p.pt", weights_only=True)
    assert set(saved) == {"boxes", "labels", "scores"} and len(saved["boxes"]) == 8
    assert all(b.shape[1:] == (4,) and len(b) == len(s) for b, s in zip(saved["boxes"], saved["scores"]))


def test_plateaus_drop_the_learning_rate_then_stop(encoder, data, monkeypatch):
    """Validation mAP scripted epoch by epoch: a plateau of `patience` epochs drops the rate 10x (`decays`
    times), the next plateau ends the run, and the best epoch is kept with the drops made before it."""
    module = importlib.import_module("ctxenc.evaluators.detection")  # the package exports the function by that name
    scores = iter([0.1, 0.2, 0.15, 0.25, 0.2, 0.9, 0.9])
    stepped_at = []  # the learning rate of every optimizer step
    calls = []  # (validation images, the learning rate of the epoch just trained) per call

    def scripted(predictions, truth, num_classes, *args):
        calls.append((len(truth), stepped_at[-1]))
        return next(scores) if len(calls) <= 5 else 0.5

    monkeypatch.setattr(module, "mean_detection_ap", scripted)
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: stepped_at.append(opt.param_groups[0]["lr"]))
    try:
        out = detection(encoder, *data, replace(FAST, max_epochs=10, patience=1, decays=1))
    finally:
        hook.remove()
    sizes, rates = zip(*calls)
    assert sizes[:5] == (4,) * 5 and len(calls) == 6  # 5 validation epochs (4 images), then the test's area AP
    assert out["epochs"] == 4.0 and out["lr_drops"] == 1.0 and out["val_map"] == 0.25
    assert rates[0] < 1e-2  # warming up
    assert rates[1:5] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-3])  # the drop follows epoch 3's plateau


def test_detection_is_deterministic(encoder, data):
    cfg = DetectionConfig(mode="frozen", lrs=(1e-2,), max_epochs=1, batch_size=8, roi_size=4, rois_per_image=16, proposals=50)
    assert detection(encoder, *data, cfg) == detection(encoder, *data, cfg)


def test_frozen_heads_in_one_pass_train_each_rate_as_it_would_alone(encoder, data):
    """One backbone pass a batch for every rate's head; each head's RoI sampling, flips and updates
    are those of its rate alone, so the two-rate run is its better rate's run, to the last bit."""
    cfg = replace(FAST, mode="frozen", lrs=(1e-3, 3e-2), max_epochs=3, patience=1, selection="grid")
    together = detection(encoder, *data, cfg)
    alone = {lr: detection(encoder, *data, replace(cfg, lrs=(lr,))) for lr in cfg.lrs}
    best = max(cfg.lrs, key=lambda lr: alone[lr]["val_map"])
    assert together["lr"] == best
    assert {k: v for k, v in together.items() if k not in ("lr_margin", "lr_min", "lr_max")} == \
        {k: v for k, v in alone[best].items() if k not in ("lr_min", "lr_max")}


def test_frozen_halving_stops_the_losing_head_at_its_rung(encoder, data):
    """Frozen detection runs its config's selection: with halving the losing head stops after the
    first rung (2 x patience = 4 validations, 4 steps an epoch), the rest is the grid's."""
    runs = {}
    for selection in ("grid", "halving"):
        steps = {}
        hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: steps.__setitem__(opt, steps.get(opt, 0) + 1))
        try:
            out = detection(encoder, *data, replace(FAST, mode="frozen", lrs=(1e-3, 3e-2), max_epochs=6, patience=2,
                                                    selection=selection))
        finally:
            hook.remove()
        runs[selection] = out, list(steps.values())  # steps of each head, in the grid's order
    (grid, grid_steps), (halving, halving_steps) = runs["grid"], runs["halving"]
    assert grid_steps == [24, 20] and halving_steps == [24, 16]  # 1e-3 trains to the cap either way; 3e-2 is cut
    assert halving == grid  # 3e-2's best came before the cut: the same choice, scores and margin


def test_detection_learns_coloured_squares(data):
    """Two colours, one square each: a fine-tuned detector finds most of them after a few epochs."""
    torch.manual_seed(0)
    encoder = create_encoder("small", in_channels=3, input_size=32)
    train, test = squares(96), data[1]
    cfg = DetectionConfig(lrs=(1e-2,), max_epochs=6, patience=6, batch_size=8, roi_size=4, rois_per_image=16, proposals=50)
    out = detection(encoder, train, test, cfg)
    assert out["map"] > 0.5, out


def test_frozen_detector_trains_no_encoder_weight(encoder):
    cfg = DetectionConfig(mode="frozen", roi_size=4)
    model = build_detector(encoder, num_classes=2, size=32, cfg=cfg)
    assert not any(p.requires_grad for p in model.backbone.encoder.parameters())
    assert model.train().backbone.encoder.training is False  # BatchNorm statistics stay fixed
    assert all(p.requires_grad for p in build_detector(encoder, 2, 32, DetectionConfig(roi_size=4)).backbone.parameters())


def test_detector_keeps_the_input_size_and_scale(encoder):
    model = build_detector(encoder, num_classes=2, size=32, cfg=DetectionConfig(roi_size=4)).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    batch, _ = model.transform(list(images))
    assert torch.equal(batch.tensors, images)  # no resize to 800 px, no second normalisation, no padding


def test_default_stage_is_the_deepest_wider_than_the_pooled_grid(encoder):
    # small at 32 px: conv1 16x16, conv2 8x8, conv3 4x4.
    assert default_stage(encoder, 6) == "conv2" and default_stage(encoder, 3) == "conv3"
    assert default_stage(create_encoder("alexnet", in_channels=3, input_size=227), 6) == "conv5"


def test_detection_refuses_bad_input_in_one_sentence(encoder, data):
    (images, boxes), test = data
    with pytest.raises(UserError, match=r"train boxes of shape \(40, objects, 5 or 6\)"):
        detection(encoder, (images, boxes[..., :4]), test, FAST)
    bad = boxes.clone()
    bad[0, 0, 3] = 32
    with pytest.raises(UserError, match="not within their 32 x 32 images"):
        detection(encoder, (images, bad), test, FAST)
    with pytest.raises(UserError, match="encoder has no stage 'conv9'"):
        detection(encoder, (images, boxes), test, DetectionConfig(stage="conv9"))
    difficult = boxes.clone()
    difficult[..., 5] = torch.where(difficult[..., 0] >= 0, 1, -1)
    with pytest.raises(UserError, match="none of them has one that is not difficult"):
        detection(encoder, (images, difficult), test, FAST)
    with pytest.raises(UserError, match="mode must be one of finetune, frozen"):
        DetectionConfig(mode="linear")


def _block_extent(image: torch.Tensor) -> list[int]:
    """(x0, y0, x1, y1) of the pixels brighter than the midpoint in a (C, H, W) image."""
    ys, xs = torch.nonzero(image[0] > 0, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


@pytest.mark.parametrize("h, w", [(32, 32), (28, 28), (36, 36), (16, 16), (64, 64), (40, 24), (30, 36)])
def test_fit_boxes_follows_the_images(h, w):
    """A white block drawn at a box lands, after to_model_input, where fit_boxes puts the box:
    exactly when padded or cropped, within a pixel when resampled (bilinear blurs the edge)."""
    # Near a corner (cut by a crop), in the middle, at the right edge.
    blocks = [(2, 3, 9, 12), (w // 2 - 3, h // 2 - 2, w // 2 + 4, h // 2 + 5), (w - 6, h // 2, w - 1, h // 2 + 5)]
    images = torch.zeros(len(blocks), 3, h, w, dtype=torch.uint8)
    boxes = torch.full((len(blocks), 2, 6), -1, dtype=torch.int16)
    for i, (x0, y0, x1, y1) in enumerate(blocks):
        images[i, :, y0 : y1 + 1, x0 : x1 + 1] = 255
        boxes[i, 0] = torch.tensor([i, x0, y0, x1, y1, i % 2])
    fitted = fit_boxes(boxes, (h, w), 32)
    resized = to_model_input(images, 32)
    resampled = max(abs(h - 32), abs(w - 32)) > 0.15 * 32
    assert fitted.dtype == boxes.dtype and fitted[:, 1].tolist() == [[-1] * 6] * 3
    assert fitted[:, 0, 0].tolist() == [0, 1, 2] and fitted[:, 0, 5].tolist() == [0, 1, 0]
    for i in range(len(blocks)):
        expected = _block_extent(resized[i])
        got = fitted[i, 0, 1:5].tolist()
        assert max(abs(a - b) for a, b in zip(got, expected)) <= (1 if resampled else 0), (i, got, expected)


def test_fit_boxes_drops_a_box_cropped_out_and_clips_a_cut_one():
    boxes = torch.tensor([[[3, 0, 0, 1, 1, 0], [4, 0, 10, 20, 12, 1]]], dtype=torch.int16)
    # 36 -> 32: a 2 px crop on every side.
    assert fit_boxes(boxes, (36, 36), 32).tolist() == [[[-1] * 6, [4, 0, 8, 18, 10, 1]]]


def test_two_rates_record_the_chosen_ones_margin_and_a_diverged_rate_none(encoder, data):
    out = detection(encoder, *data, replace(FAST, lrs=(1e-3, 1e-2)))
    assert out["lr"] in (1e-3, 1e-2) and 0 <= out["lr_margin"] <= out["val_map"]
    out = detection(encoder, *data, replace(FAST, lrs=(1e6, 1e-2)))
    assert out["lr"] == 1e-2 and "lr_margin" not in out  # 1e6 never reached a validation


def test_a_learning_rate_that_diverges_everywhere_is_one_sentence(encoder, data):
    with pytest.raises(UserError, match=r"diverged \(a non-finite loss\) before its first validation at every learning rate of \[1000000\.0\]"):
        detection(encoder, *data, replace(FAST, lrs=(1e6,)))
