import pytest
import torch

from ctxenc.encoders import create_encoder
from ctxenc.errors import UserError
from ctxenc.evaluators import (FinetuneConfig, KNNConfig, LinearProbeConfig, SegmentationConfig, finetune, knn,
                               linear_probe, segmentation)
from ctxenc.evaluators.knn import knn_classifier
from ctxenc.evaluators.linear_probe import fit_logistic


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
    assert set(result) == {"accuracy", "val_accuracy", "weight_decay"}
    assert result["accuracy"] > 0.9 and result["weight_decay"] in (1e-4, 1e-2)
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
    assert set(result) == {f"{m}@{s}" for m in ("map", "val_map", "weight_decay") for s in ("conv1", "conv3")}
    assert result["map@conv1"] > 0.9 and result["map@conv3"] > 0.9


def test_finetune_single_and_multi_label_with_fractions():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images, labels, _ = squares(200)
    cfg = FinetuneConfig(label_fractions=(0.5, 1.0), lrs=(3e-3,), epochs=3, min_steps=40, batch_size=32, flip=False)
    result = finetune(encoder, (images[:160], labels[:160]), (images[160:], labels[160:]), cfg)
    assert set(result) == {f"{m}@{p}" for m in ("map", "val_map", "lr", "epochs") for p in ("50%", "100%")}
    assert result["map@100%"] > 0.9 and 1 <= result["epochs@100%"] <= 10
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
    cfg = FinetuneConfig(lrs=(1e-3,), epochs=2, min_steps=4, batch_size=32, seed=5)
    runs = [finetune(encoder, (images[:64], labels[:64]), (images[64:], labels[64:]), cfg) for _ in range(2)]
    assert runs[0] == runs[1]


def test_segmentation_frozen_and_finetune():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    images, _, maps = squares(120)
    maps[:, 0, :] = 255  # an ignored row
    train, test = (images[:90], maps[:90]), (images[90:], maps[90:])
    for mode in ("frozen", "finetune"):
        cfg = SegmentationConfig(mode=mode, lrs=(3e-2,), epochs=30, batch_size=30, flip=False)
        result = segmentation(encoder, train, test, cfg)
        assert {"miou", "pixel_accuracy", "val_miou", "lr", "epochs", "iou/0", "iou/3"} <= set(result)
        assert result["pixel_accuracy"] > 0.8 and result["miou"] > 0.4, (mode, result)


def test_segmentation_rejects_unknown_stage_and_mode():
    encoder = create_encoder("small").eval()
    images, _, maps = squares(8)
    with pytest.raises(UserError, match="no stage 'conv9'"):
        segmentation(encoder, (images, maps), (images, maps), SegmentationConfig(stages=("conv9",)))
    with pytest.raises(UserError, match="mode must be one of"):
        SegmentationConfig(mode="partial")
