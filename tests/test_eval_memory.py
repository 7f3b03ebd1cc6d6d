"""Evaluation in bounded memory: uint8 splits converted batch by batch (`ModelInputs`), frozen
features in batches that shrink with the input size, bfloat16 inference under `amp`."""

import pytest
import torch

import ctxenc.evaluators.features as features
import ctxenc.evaluators.inputs as inputs
from ctxenc.data.transforms import fit_label_maps, to_model_input
from ctxenc.encoders import create_encoder
from ctxenc.engine import TrainConfig, pretrain
from ctxenc.errors import UserError
from ctxenc.evaluation import evaluate
from ctxenc.evaluators import FinetuneConfig, KNNConfig, LinearProbeConfig, SegmentationConfig, finetune, knn, linear_probe, segmentation
from ctxenc.evaluators.inpainting import require_context_encoder
from ctxenc.evaluators.inputs import ModelInputs
from ctxenc.pretext import pretext_spec
from tests.conftest import make_fashion_mnist


def stored(n: int, size: int, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (n, C, size, size): class k has a bright bar at row 2 + 6k; labels (n,)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    pixels = torch.randint(0, 60, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    for k in range(3):
        pixels[labels == k, :, 2 + 6 * k : 5 + 6 * k, 3 : size - 3] = 255
    return pixels, labels


@pytest.mark.parametrize("size", [28, 40, 32])  # padded to 32, resized to 32, as stored
def test_model_inputs_index_and_convert_as_the_whole_float_split_would(size):
    pixels, _ = stored(10, size, channels=3)
    whole = to_model_input(pixels, 32)
    x = ModelInputs(pixels, 32)
    assert len(x) == 10 and x.shape == whole.shape
    assert torch.equal(x[2:5].to("cpu"), whole[2:5])
    idx = torch.tensor([7, 0, 3])
    assert x[idx].pixels.dtype == torch.uint8  # still stored bytes until sent
    assert torch.equal(x[idx].to("cpu"), whole[idx])
    with pytest.raises(TypeError):
        x[0]
    with pytest.raises(TypeError):
        ModelInputs(whole, 32)  # floats are already model input


def test_protocols_score_model_inputs_as_the_converted_split():
    """Bit for bit on the CPU: linear probe, kNN, fine-tuning and segmentation, streaming or not."""
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    pixels, labels = stored(60, 28)
    test_pixels, test_labels = stored(30, 28, seed=1)
    streamed = (ModelInputs(pixels, 32), labels), (ModelInputs(test_pixels, 32), test_labels)
    converted = (to_model_input(pixels, 32), labels), (to_model_input(test_pixels, 32), test_labels)
    runs = [(linear_probe, LinearProbeConfig(weight_decays=(1e-3,), max_iter=10)), (knn, KNNConfig(k=5)),
            (finetune, FinetuneConfig(lrs=(1e-3,), max_epochs=1, min_steps=0, batch_size=16))]
    for protocol, cfg in runs:
        assert protocol(encoder, *streamed, cfg) == protocol(encoder, *converted, cfg), protocol.__name__
    maps = (pixels[:, 0, 2:30, :] > 200).to(torch.uint8)  # the bars, as a class map (28 -> padded like the images)
    maps, test_maps = fit_label_maps(maps, 32), fit_label_maps((test_pixels[:, 0] > 200).to(torch.uint8), 32)
    seg = SegmentationConfig(mode="frozen", lrs=(1e-2,), max_epochs=1, patience=1, batch_size=16)
    assert (segmentation(encoder, (streamed[0][0], maps), (streamed[1][0], test_maps), seg)
            == segmentation(encoder, (converted[0][0], maps), (converted[1][0], test_maps), seg))


def test_frozen_features_never_convert_more_than_a_batch(monkeypatch):
    """With budgets of 8 images per batch, no conversion holds more than 8 images of a 40-image split."""
    converted = []
    real = inputs.to_model_input
    monkeypatch.setattr(inputs, "to_model_input", lambda x, size: converted.append(len(x)) or real(x, size))
    monkeypatch.setattr(features, "MAX_BATCH_VALUES", 8 * 32 * 32)
    monkeypatch.setattr(features, "RECALIBRATION_BATCH_VALUES", 8 * 32 * 32)
    torch.manual_seed(0)
    pixels, labels = stored(40, 32)
    result = linear_probe(create_encoder("small").eval(), (ModelInputs(pixels, 32), labels),
                          (ModelInputs(pixels[:16], 32), labels[:16]), LinearProbeConfig(weight_decays=(1e-3,), max_iter=5))
    assert result["accuracy"] >= 0
    assert max(converted) == 8 and sum(converted) == 40 + 40 + 16  # recalibration, train and test features


def test_bfloat16_inference_returns_float32_features_close_to_float32_ones():
    torch.manual_seed(0)
    encoder = create_encoder("small").eval()
    x = ModelInputs(stored(20, 32)[0], 32)
    full = features.extract_features(encoder, x)
    with features.bfloat16_inference():
        mixed = features.extract_features(encoder, x)
    assert mixed.dtype == torch.float32
    assert not torch.equal(mixed, full)  # it did run in bfloat16
    torch.testing.assert_close(mixed, full, rtol=0.05, atol=0.05)
    assert not features._bfloat16  # the context ends with its block


def test_evaluate_records_device_and_amp(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXENC_CACHE", str(tmp_path / "cache"))
    data = make_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=32)
    ckpt = pretrain("fashion_mnist", {"name": "small"}, pretext_spec({"name": "context_encoder"}),
                    TrainConfig(steps=1, batch_size=16), tmp_path / "ce", data_root=str(data), progress=False)
    cfg = LinearProbeConfig(weight_decays=(1e-3,), max_iter=5)
    rows = {amp: evaluate(ckpt, "linear_probe", cfg, "fashion_mnist", str(data), amp=amp) for amp in (False, True)}
    for amp, result in rows.items():
        assert {(r["device"], r["gpu"], r["amp"]) for r in result} == {("cpu", "", amp)}
        assert {r["metric"] for r in result} == {"accuracy", "val_accuracy", "weight_decay", "accuracy_majority"}


def test_inpainting_refusal_names_the_checkpoints_pretext():
    class Autoencoder:
        name = "autoencoder"

    with pytest.raises(UserError, match="inpainting needs a context_encoder checkpoint, and this one was pretrained "
                                        "with autoencoder; pretrain with --pretext context_encoder."):
        require_context_encoder(Autoencoder())
