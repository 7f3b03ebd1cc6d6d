"""The Python API: a pretrained encoder and the features ctxenc's frozen protocols score, outside ctxenc.

    import ctxenc
    encoder = ctxenc.load_encoder("runs/ce")                  # a run folder or its checkpoint.pt
    features = ctxenc.extract_features(encoder, images)       # uint8 (N, C, H, W) -> (N, D)

Input contract (every encoder; `encoder.in_channels` and `encoder.input_size` give C and S):
- uint8 images (N, C, H, W), pixels 0-255, any H and W: brought to S x S by the rule every
  dataset goes through (`ctxenc.data.transforms.to_model_input`): sizes within 15% of S are
  padded (black) or centre-cropped, others resized (shorter side to S, bilinear, antialiased)
  and centre-cropped; then scaled to [-1, 1];
- or float images (N, C, S, S) already in [-1, 1] (what `to_model_input` returns).
C is 1 (grayscale) or 3 (RGB, in that order), as the checkpoint's pretraining data; channels first.

`extract_features` with its defaults gives the matrix the linear probe and kNN fit on (the last
stage, average-pooled to a 2 x 2 grid, BatchNorm statistics recalibrated on unmasked images).
`docs/python.md` has a worked example.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ctxenc.checkpoint import load_encoder as load_checkpoint_encoder
from ctxenc.device import resolve_device
from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators import features
from ctxenc.evaluators.inputs import ModelInputs

# The frozen protocols' defaults (LinearProbeConfig, KNNConfig): the last stage, pooled to 2 x 2.
PROBE_GRID = 2
# Fewer images than a batch give BatchNorm statistics of those images alone (a single photo's
# own mean and variance), not of the data: refused, with the way out. The protocols use up to 2000.
MIN_RECALIBRATION_IMAGES = 32


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """The pretrained encoder of a checkpoint file or run folder, in eval mode, on `device`.

    The encoder takes (B, C, S, S) float images in [-1, 1] with C = `encoder.in_channels` and
    S = `encoder.input_size` (see the module docstring); `encoder.stage_names` lists the stages
    `extract_features` can pool, `encoder.config` the options it was built with.
    """
    encoder, _ = load_checkpoint_encoder(path)  # a file or a run folder
    return encoder.to(resolve_device(device)).eval()


def model_input(encoder: Encoder, images: torch.Tensor | np.ndarray) -> features.Images:
    """uint8 (N, C, H, W) -> `ModelInputs` (converted to (B, C, S, S) in [-1, 1] batch by batch, on
    the encoder's device: never the whole float array); float (N, C, S, S) in [-1, 1] -> float32, on the CPU.

    Anything else (wrong channel count or layout, float at another size or outside [-1, 1]) is a
    `UserError` saying what was expected.
    """
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # np.asarray(PIL image) is read-only, which torch warns about
    images = torch.as_tensor(images)
    c, s = encoder.in_channels, encoder.input_size
    if images.dim() != 4 or images.shape[1] != c:
        raise UserError(f"images must be (N, C, H, W) with C = {c} channels first, got shape {tuple(images.shape)}.")
    if images.dtype == torch.uint8:
        return ModelInputs(images.cpu(), s)
    if not images.is_floating_point():
        raise UserError(f"images must be uint8 (0-255) or float in [-1, 1], got {images.dtype}.")
    if tuple(images.shape[-2:]) != (s, s):
        raise UserError(f"float images must already be the encoder's {s} x {s} input, got {images.shape[-2]} x {images.shape[-1]}; "
                        "pass uint8 images to have them resized, or use ctxenc.data.transforms.to_model_input.")
    if len(images) and (images.min() < -1.001 or images.max() > 1.001):
        raise UserError(f"float images must lie in [-1, 1], got values in [{images.min():.3g}, {images.max():.3g}]; "
                        "pass uint8 (0-255) images, or scale with x / 127.5 - 1.")
    return images.float().cpu()


def extract_features(encoder: Encoder, images: torch.Tensor | np.ndarray, stage: str | None = None, grid: int = PROBE_GRID,
                     recalibrate_bn: bool | torch.Tensor | np.ndarray = True, batch_size: int = 1000) -> torch.Tensor:
    """images (N, C, H, W) -> features (N, D) on the CPU, D = channels of `stage` x grid^2.

    images: uint8 0-255 at any size, or float (N, C, S, S) in [-1, 1] (the module docstring's
    input contract). stage: one of `encoder.stage_names` (default: the last); grid: each
    channel's map is average-pooled to grid x grid cells, channel-major (default 2, as the
    linear probe, layer-wise probe and kNN protocols).

    recalibrate_bn: the frozen protocols re-estimate BatchNorm's running statistics on unmasked
    training images before extracting (`ctxenc.evaluators.features.recalibrated`; the statistics
    a context encoder kept describe masked images). True (default) recalibrates on `images`
    (their first 2000); a tensor of images (same contract) recalibrates on those: pass the
    training images when extracting test features, as the protocols do, or for a few images of
    your own (fewer than 32 are refused for recalibration); False keeps the checkpoint's
    statistics (what `encoder.pooled` uses). The encoder handed in is not changed, and a
    feature does not depend on the other images of its batch.

    The protocols' own matrices: train = extract_features(encoder, train_images),
    test = extract_features(encoder, test_images, recalibrate_bn=train_images).
    """
    if grid < 1:
        raise UserError(f"grid must be at least 1 (cells per side), got {grid}.")
    x = model_input(encoder, images)
    if isinstance(recalibrate_bn, (bool, np.bool_)):
        encoder = recalibrated(encoder, x, "images") if recalibrate_bn else encoder
    else:
        encoder = recalibrated(encoder, model_input(encoder, recalibrate_bn), "recalibrate_bn")
    return features.extract_features(encoder, x, stage, grid, batch_size)


def recalibrated(encoder: Encoder, images: torch.Tensor, name: str) -> Encoder:
    """`features.recalibrated`, refused on fewer than MIN_RECALIBRATION_IMAGES images when the encoder has BatchNorm."""
    has_norms = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in encoder.modules())
    if has_norms and len(images) < MIN_RECALIBRATION_IMAGES:
        raise UserError(f"recalibrating BatchNorm on {len(images)} image(s) ({name}) would describe those images alone; "
                        f"pass recalibrate_bn=<your training images> ({MIN_RECALIBRATION_IMAGES} or more, uint8 (N, C, H, W)) "
                        "or recalibrate_bn=False to keep the checkpoint's statistics.")
    return features.recalibrated(encoder, images)
