import pytest
import torch

from ctxenc.encoders import create_encoder
from ctxenc.errors import UserError
from ctxenc.evaluators import (FinetuneConfig, KNNConfig, LinearProbeConfig, SegmentationConfig, finetune, knn,
                               linear_probe, segmentation)
from ctxenc.evaluators.features import batched, recalibrated
from ctxenc.evaluators.finetune import trivial_reference
from ctxenc.evaluators.knn import knn_classifier
from ctxenc.evaluators.linear_probe import fit_logistic
from ctxenc.evaluators.selection import train_and_select


def test_knn_classifier_known_answer():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[5.0, 0.2], [0.3, 4.0]])  # cosine: scale does not matter
    assert knn_classifier(train, labels, test, k=2, temperature=0.07, num_classes=2).tolist() == [0, 1]


def test_logistic_regression_separates_separable_data():
    torch.manual_seed(0)
    x = torch.randn(200, 5)
    y = (x[:, 0] > 0).long()
    head = fit_logistic(x, y, 2, 1e-4, 50)
    assert ((head(x).argmax(1) == y).float().mean()) > 0.97


def test_probes_run_on_a_frozen_encoder():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    labels = torch.arange(120) % 3
    images = torch.full((120, 1, 32, 32), -1.0)
    for k in range(3):  # class k: a bright square in one of three places
        images[labels == k, :, 4 + 8 * k : 10 + 8 * k, 4 + 8 * k : 10 + 8 * k] = 1.0
    images += 0.1 * torch.randn_like(images)
    train, test = (images[:90], labels[:90]), (images[90:], labels[90:])
    result = linear_probe(encoder, train, test, LinearProbeConfig(weight_decays=(1e-4, 1e-2), max_iter=30))
    assert set(result) == {"accuracy", "val_accuracy", "weight_decay", "accuracy_majority"}
    assert result["accuracy"] > 0.9
    # The probe reported is the chosen penalty's: alone in the grid, it gives the same scores.
    alone = linear_probe(encoder, train, test, LinearProbeConfig(weight_decays=(result["weight_decay"],), max_iter=30))
    assert alone == result
    assert knn(encoder, train, test, KNNConfig(k=5))["accuracy"] > 0.9


def squares(n: int, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (n, C, 32, 32) with up to three bright squares on the diagonal (not flip-invariant): square k present
    <-> class k. Returns images, multi-hot labels (n, 3) and class maps (n, 32, 32), 0 = background."""
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, 3, generator=gen) < 0.5).float()
    images = torch.full((n, channels, 32, 32), -1.0)
    maps = torch.zeros(n, 32, 32, dtype=torch.long)
    for k in range(3):
        rows = slice(2 + 10 * k, 10 + 10 * k)
        on = labels[:, k] == 1
        images[on, :, rows, rows] = 1.0
        maps[on, rows, rows] = k + 1
    return images + 0.1 * torch.randn(images.shape, generator=gen), labels, maps


def test_linear_probe_multi_label_layerwise():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images, labels, _ = squares(160)
    cfg = LinearProbeConfig(stages=("conv1", "conv3"), weight_decays=(1e-3,), max_iter=30)
    result = linear_probe(encoder, (images[:120], labels[:120]), (images[120:], labels[120:]), cfg)
    assert set(result) == {f"{m}@{s}" for m in ("map", "val_map", "weight_decay") for s in ("conv1", "conv3")} | {"map_class_prior"}
    assert result["map@conv1"] > 0.9 and result["map@conv3"] > 0.9


def test_finetune_single_and_multi_label_with_fractions():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images, labels, _ = squares(200)
    cfg = FinetuneConfig(label_fractions=(0.5, 1.0), lrs=(3e-3,), max_epochs=3, patience=2, min_steps=40, batch_size=32,
                         flip=False)
    result = finetune(encoder, (images[:160], labels[:160]), (images[160:], labels[160:]), cfg)
    names = ("map", "val_map", "lr", "lr_min", "lr_max", "epochs", "max_epochs")
    assert set(result) == {f"{m}@{p}" for m in names for p in ("50%", "100%")} | {"map_class_prior"}
    assert result["map@100%"] > 0.9 and 1 <= result["epochs@100%"] <= result["max_epochs@100%"]
    # min_steps 40 at 4 (144 fit images) or 2 (72) steps per epoch, plus the patience, raise the cap of 3
    assert result["max_epochs@100%"] == 10 + 2 and result["max_epochs@50%"] == 20 + 2
    assert result["lr@100%"] == result["lr_min@100%"] == result["lr_max@100%"] == 3e-3
    single = labels[:, 0].long()  # class = is the first square there
    result = finetune(encoder, (images[:160], single[:160]), (images[160:], single[160:]), cfg)
    assert result["accuracy@100%"] > 0.9
    # the encoder handed in is not changed by fine-tuning
    assert torch.equal(encoder.stages.conv1[0].weight, create_encoder_like(encoder).stages.conv1[0].weight)


def create_encoder_like(encoder):
    torch.manual_seed(0)
    return create_encoder("small")


def test_finetune_is_deterministic():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images, labels, _ = squares(96)
    cfg = FinetuneConfig(lrs=(1e-3,), max_epochs=2, patience=1, min_steps=4, batch_size=32, seed=5)
    runs = [finetune(encoder, (images[:64], labels[:64]), (images[64:], labels[64:]), cfg) for _ in range(2)]
    assert runs[0] == runs[1]


def test_segmentation_frozen_and_finetune():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images, _, maps = squares(120)
    maps[:, 0, :] = 255  # an ignored row
    train, test = (images[:90], maps[:90]), (images[90:], maps[90:])
    for mode in ("frozen", "finetune"):
        cfg = SegmentationConfig(mode=mode, lrs=(3e-2,), max_epochs=30, patience=30, batch_size=30, flip=False)
        result = segmentation(encoder, train, test, cfg)
        assert {"miou", "pixel_accuracy", "val_miou", "lr", "lr_min", "lr_max", "epochs", "max_epochs", "iou/0", "iou/3",
                "miou_all_background", "pixel_accuracy_all_background"} <= set(result)
        assert result["pixel_accuracy"] > 0.8 and result["miou"] > 0.4, (mode, result)
        assert result["miou"] > result["miou_all_background"]


def test_frozen_segmentation_trains_each_rates_head_as_it_would_alone():
    """Every rate's head in one pass: each gives what it gives alone, and the best validation wins."""
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images, _, maps = squares(60)
    train, test = (images[:40], maps[:40]), (images[40:], maps[40:])
    cfg = SegmentationConfig(mode="frozen", selection="grid", lrs=(1e-3, 3e-2, 1.0), max_epochs=6, patience=2, batch_size=10)
    together = segmentation(encoder, train, test, cfg)
    alone = {lr: segmentation(encoder, train, test, SegmentationConfig(**{**cfg.__dict__, "lrs": (lr,)})) for lr in cfg.lrs}
    best = max(cfg.lrs, key=lambda lr: alone[lr]["val_miou"])
    assert together["lr"] == best and together["val_miou"] == alone[best]["val_miou"]
    assert together["miou"] == alone[best]["miou"] and together["epochs"] == alone[best]["epochs"]
    assert len({alone[lr]["val_miou"] for lr in cfg.lrs}) == 3  # the rates differ: the choice is not a tie


def test_segmentation_rejects_unknown_stage_and_mode():
    encoder = create_encoder("small").eval()
    images, _, maps = squares(8)
    with pytest.raises(UserError, match="no stage 'conv9'"):
        segmentation(encoder, (images, maps), (images, maps), SegmentationConfig(stages=("conv9",)))
    with pytest.raises(UserError, match="mode must be one of"):
        SegmentationConfig(mode="partial")


def test_trivial_references_by_hand():
    # Multi-label: constant scores tie every image, so each class's AP is its positive rate on test.
    train = torch.tensor([[1, 0], [1, 1], [0, 0], [1, 0]]).float()
    test = torch.tensor([[1, 0], [0, 1], [0, 0], [1, 1]]).float()  # positive rates 2/4 and 2/4
    assert trivial_reference(train, test) == {"map_class_prior": pytest.approx(0.5)}
    test = torch.tensor([[1, 0], [0, 0], [0, 0], [1, 1]]).float()  # 2/4 and 1/4
    assert trivial_reference(train, test) == {"map_class_prior": pytest.approx(0.375)}
    # Single-label: always the most frequent training class (2 here), right on 2 of 5 test images.
    assert trivial_reference(torch.tensor([2, 2, 0, 1, 2]), torch.tensor([2, 0, 1, 2, 1])) == {"accuracy_majority": pytest.approx(0.4)}


def test_all_background_reference_by_hand():
    encoder = create_encoder("small").eval()
    images, _, maps = squares(40)
    test_maps = torch.zeros(4, 32, 32, dtype=torch.long)
    test_maps[0, :16] = 1  # 512 class-1 pixels of 4096
    test_maps[1, 0, :] = 255  # 32 ignored pixels
    cfg = SegmentationConfig(mode="frozen", lrs=(1e-2,), max_epochs=1, patience=1, batch_size=20)
    result = segmentation(encoder, (images, maps), (images[:4], test_maps), cfg)
    background = (4096 - 512 - 32) / (4096 - 32)  # background IoU = its pixel accuracy; class 1 IoU = 0
    assert result["pixel_accuracy_all_background"] == pytest.approx(background)
    assert result["miou_all_background"] == pytest.approx(background / 2)


def test_recalibrated_batchnorm_matches_the_images_and_leaves_the_encoder():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images = 0.5 * torch.randn(64, 1, 32, 32) + 0.3
    fresh = recalibrated(encoder, images, max_images=48, batch_size=16)
    bn = fresh.stages.conv1[1]
    conv = fresh.stages.conv1[0]
    with torch.no_grad():
        pre = conv(images[:48])  # what the first BatchNorm sees
    assert torch.allclose(bn.running_mean, pre.mean(dim=(0, 2, 3)), atol=1e-4)  # cumulative over 3 batches of 16
    assert not fresh.training and bn.momentum == encoder.stages.conv1[1].momentum
    assert torch.equal(encoder.stages.conv1[1].running_mean, torch.zeros_like(bn.running_mean))  # untouched


def test_batched_matches_one_pass_for_tensors_and_dicts():
    x = torch.randn(1003, 4)
    assert torch.equal(batched(lambda t: t * 2, x, 100), x * 2)
    out = batched(lambda t: {"a": t[:, :1], "b": t.sum(1)}, x, 250)
    assert torch.equal(out["a"], x[:, :1]) and torch.allclose(out["b"], x.sum(1))


def select(score, loss=lambda m, idx, gen: m(torch.ones(len(idx), 1)).sum(), **schedule):
    """train_and_select on a one-weight model: 8 fit and 2 validation indices, batches of 4,
    one learning rate (1e-3), max_epochs 50, patience 2 unless `schedule` says otherwise."""
    schedule = {"lrs": (1e-3,), "max_epochs": 50, "patience": 2, "batch_size": 4, "optimizer": torch.optim.Adam, "seed": 0,
                **schedule}
    return train_and_select(lambda: torch.nn.Linear(1, 1), loss, score, torch.arange(8), torch.arange(2), **schedule)


def scores(*values):
    """A validation score that returns `values` in turn, counting its calls in `.calls`."""
    def score(m, idx):
        score.calls += 1
        return values[score.calls - 1]
    score.calls = 0
    return score


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    # A score that rises until epoch 3, then falls: training stops at epoch 3 + patience.
    score = scores(-2, -1, 0, -1, -2, -3)
    chosen = select(score)
    assert chosen.epochs == 3 and score.calls == 5 and chosen.max_epochs == 50
    assert chosen.metrics((1e-4, 1e-3), "@10%") == {"lr@10%": 1e-3, "lr_min@10%": 1e-4, "lr_max@10%": 1e-3,
                                                     "epochs@10%": 3.0, "max_epochs@10%": 50.0}


def test_the_chosen_rate_records_its_margin_over_the_best_other_rate():
    # 1e-3 validates 0.1, 0.4, 0.3, 0.2 (best 0.4); 1e-2 validates 0.5, 0.45, 0.3 (best 0.5).
    chosen = select(scores(0.1, 0.4, 0.3, 0.2, 0.5, 0.45, 0.3), lrs=(1e-3, 1e-2))
    assert chosen.lr == 1e-2 and chosen.val_score == 0.5 and chosen.lr_margin == pytest.approx(0.1)
    assert chosen.metrics((1e-3, 1e-2))["lr_margin"] == pytest.approx(0.1)
    assert "lr_margin" not in select(scores(1, 0, -1)).metrics((1e-3,))  # one rate: no margin


def test_short_epochs_validate_every_few_epochs_and_patience_counts_validations():
    # 8 images in batches of 4: 2 steps an epoch, so val_every_steps=6 validates after epochs
    # 3, 6, 9, 12. The score peaks at the 2nd validation; patience 2 stops after the 4th.
    score = scores(-1, 0, -1, -2, -3)
    chosen = select(score, val_every_steps=6)
    assert chosen.epochs == 6 and score.calls == 4 and chosen.max_epochs == 50


def test_the_cap_is_always_validated():
    score = scores(1, 2, 3, 4)
    chosen = select(score, max_epochs=7, patience=1, val_every_steps=6)
    assert score.calls == 3 and chosen.epochs == 7  # after epochs 3, 6 and the cap, 7


def test_a_diverging_rate_loses_and_all_diverging_is_one_sentence():
    # An unbounded loss: Adam at 1e30 takes it past float32 in two steps, 1e-3 does not.
    def run(lrs):
        return select(lambda m, idx: 0.0, loss=lambda m, idx, gen: -1e10 * m(torch.ones(len(idx), 1)).sum(), lrs=lrs,
                      max_epochs=3, patience=1, batch_size=1)

    assert run((1e30, 1e-3)).lr == 1e-3
    with pytest.raises(UserError, match=r"diverged \(a non-finite loss\) .* every learning rate of \[1e\+30\]"):
        run((1e30,))


def test_bad_schedules_are_one_sentence():
    with pytest.raises(UserError, match="max_epochs >= 1 and patience >= 1"):
        FinetuneConfig(patience=0)
    with pytest.raises(UserError, match="val_every_steps must be at least 1"):
        FinetuneConfig(val_every_steps=0)
    with pytest.raises(UserError, match="at least one learning rate"):
        SegmentationConfig(lrs=())


def test_validation_is_held_out_once_for_every_label_fraction():
    from ctxenc.evaluators.selection import carve_validation

    fit_all, val_all = carve_validation(2000, 1.0, 0.1, seed=3)
    fit_10, val_10 = carve_validation(2000, 0.1, 0.1, seed=3)
    fit_1, val_1 = carve_validation(2000, 0.01, 0.1, seed=3)
    assert torch.equal(val_all, val_10) and torch.equal(val_10, val_1) and len(val_1) == 200  # not 2 images at 1%
    assert (len(fit_all), len(fit_10), len(fit_1)) == (1800, 180, 18)
    assert set(fit_1.tolist()) <= set(fit_10.tolist()) <= set(fit_all.tolist())  # nested
    assert not set(fit_all.tolist()) & set(val_all.tolist())


def test_finetune_reports_the_devkits_11_point_ap_when_asked():
    torch.manual_seed(0)
    encoder = create_encoder("small", in_channels=1)
    images = torch.rand(40, 1, 32, 32) * 2 - 1
    labels = (torch.rand(40, 3) < 0.4).float()
    cfg = dict(lrs=(1e-3,), max_epochs=1, patience=1, min_steps=0, batch_size=16)
    area = finetune(encoder, (images, labels), (images, labels), FinetuneConfig(**cfg))
    eleven = finetune(encoder, (images, labels), (images, labels), FinetuneConfig(**cfg, ap="11point"))
    assert area["map@100%"] != eleven["map@100%"] and 0 <= eleven["map@100%"] <= 1
    with pytest.raises(UserError, match="ap must be one of area, 11point"):
        FinetuneConfig(ap="voc")


def test_too_few_training_images_are_one_sentence():
    from ctxenc.evaluators.selection import carve_validation

    encoder = create_encoder("small").eval()
    images, labels, maps = squares(6)
    single = labels[:, 0].long()
    cfg = FinetuneConfig(lrs=(1e-3,), max_epochs=1, patience=1, min_steps=0, batch_size=8)
    few = r"needs at least 2 training images \(1 to train on, 1 to validate on\), got 1; evaluate on more images \(a larger --limit\)\.$"
    with pytest.raises(UserError, match=few):
        finetune(encoder, (images[:1], single[:1]), (images, single), cfg)
    with pytest.raises(UserError, match=few):
        segmentation(encoder, (images[:1], maps[:1]), (images, maps), SegmentationConfig(lrs=(1e-2,), max_epochs=1))
    with pytest.raises(UserError, match=r"a linear probe needs at least 3 training images \(1 to validate on, 2 to fit\), got 2"):
        linear_probe(encoder, (images[:2], single[:2]), (images, single), LinearProbeConfig(weight_decays=(1e-3,), max_iter=2))
    # Two images: one on each side, whatever the validation fraction; fine-tuning then runs.
    assert [len(part) for part in carve_validation(2, 1.0, 0.9, seed=0)] == [1, 1]
    assert finetune(encoder, (images[:2], single[:2]), (images, single), cfg)["epochs@100%"] == 1.0
