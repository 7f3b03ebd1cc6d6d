"""FCN-style semantic segmentation on encoder stages (Long et al. 2015, as the paper's VOC12 test).

A 1x1 convolution on each chosen stage scores every class at that stage's resolution; the
scores are upsampled bilinearly to the finest chosen stage, summed (the skip fusion of FCN) and
the sum upsampled to the input size (one full-size upsampling, not one per stage: the backward
pass of bilinear upsampling dominates the cost on a CPU), then trained with per-pixel cross-entropy that skips `ignore_index`. `frozen` trains only the
classifiers on fixed features; `finetune` trains the encoder too. The learning rate (a
log-spaced grid) and the epoch (early stopping with patience) are chosen on a validation split
carved from train; mIoU (background included), per-class IoU and pixel accuracy are measured on
the test split.

`frozen` first recalibrates the encoder's BatchNorm running statistics on unmasked training
images (`features.recalibrated`): without it a random initialisation keeps statistics 0/1 and
its frozen features give an all-background prediction. The features are then computed once and
one head per learning rate trains on them, all in one pass (`selection.train_heads_and_select`).
Either mode runs its grid as `selection` says: `grid` (every rate to its own stop) or `halving`
(successive halving, the worse rates cut early; frozen, the losing heads stop training at the
rungs). The trivial reference of predicting background everywhere is returned beside the scores
(`miou_all_background`, `pixel_accuracy_all_background`): a method that does not beat it has
learnt nothing usable.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.data.cache import read_rows
from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.features import batched, device_of, recalibrated
from ctxenc.evaluators.metrics import confusion_matrix, segmentation_scores
from ctxenc.evaluators.selection import (DEFAULT_LRS, DEFAULT_SELECTION, carve_validation, check_schedule, train_and_select,
                                         train_heads_and_select)

MODES = ("finetune", "frozen")


@dataclass(frozen=True)
class SegmentationConfig:
    """mode: finetune (train the encoder too) or frozen; stages: encoder stages the classifiers sit
    on (None: all); lrs: the learning-rate grid (Adam); each learning rate trains until the
    validation mIoU has not improved for `patience` epochs, at most `max_epochs` (the best epoch
    kept); flip: random horizontal flips (finetune only: frozen features are computed once);
    selection: how the grid runs, `grid` (every rate to its own stop) or `halving` (the worse rates
    cut early; frozen trains every rate's head in one pass either way, and `halving` stops the losing
    heads at its rungs)."""

    target: ClassVar[str] = "class_maps"

    mode: str = "finetune"
    stages: tuple[str, ...] | None = None
    lrs: tuple[float, ...] = DEFAULT_LRS
    max_epochs: int = 60
    patience: int = 5
    batch_size: int = 64
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    ignore_index: int = 255
    flip: bool = True
    selection: str = DEFAULT_SELECTION
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"segmentation mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        check_schedule(self.lrs, self.max_epochs, self.patience, "segmentation", self.selection)
        if not 0 < self.val_fraction < 1:
            raise UserError(f"segmentation needs a validation fraction in (0, 1), got {self.val_fraction}.")


class FCNHead(nn.Module):
    """{stage: (B, C_s, h_s, w_s)} -> class scores (B, K, size, size): 1x1 conv per stage, upsampled
    to the finest stage and summed, then upsampled to size x size."""

    def __init__(self, stage_channels: dict[str, int], num_classes: int, size: int):
        super().__init__()
        self.size = size
        self.classifiers = nn.ModuleDict({s: nn.Conv2d(c, num_classes, 1) for s, c in stage_channels.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        scores = [head(features[s]) for s, head in self.classifiers.items()]
        finest = max(x.shape[-1] for x in scores)
        fused = sum(x if x.shape[-1] == finest else
                    F.interpolate(x, size=(finest, finest), mode="bilinear", align_corners=False) for x in scores)
        return F.interpolate(fused, size=(self.size, self.size), mode="bilinear", align_corners=False)


class FCN(nn.Module):
    """encoder + FCNHead: images (B, C, S, S) -> class scores (B, K, S, S)."""

    def __init__(self, encoder: Encoder, head: FCNHead):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.last = [s for s in encoder.stage_names if s in head.classifiers][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.forward_features(x, until=self.last))


def stage_maps(encoder: Encoder, images: torch.Tensor, stages: list[str], batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Frozen features: images (N, C, S, S) -> {stage: (N, C_s, h_s, w_s)}, encoder in eval mode."""
    encoder.eval()
    maps = batched(lambda x: encoder.forward_features(x, until=stages[-1]), images, batch_size, device_of(encoder))
    return {s: maps[s] for s in stages}


def map_chunks(maps: torch.Tensor, rows: int = 500):
    """maps (N, S, S) -> its rows in chunks (b, S, S), read with `read_rows`: a decoded-cache array's
    pages are not left resident, as they would be by scanning the memory map."""
    for chunk in torch.arange(len(maps)).split(rows):
        yield read_rows(maps, chunk)


def largest_label(maps: torch.Tensor, ignore_index: int) -> int:
    """The largest class in maps (N, S, S) other than `ignore_index`; -1 when every pixel is ignored."""
    return max((int(m[m != ignore_index].max()) for m in map_chunks(maps) if (m != ignore_index).any()), default=-1)


def segmentation(encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                 cfg: SegmentationConfig = SegmentationConfig()) -> dict[str, float]:
    """train, test: (images (N, C, S, S) in [-1, 1] or `ModelInputs`, class maps (N, S, S) with `ignore_index`).

    -> {miou, pixel_accuracy, iou/<k> per class, val_miou, lr, lr_min, lr_max, epochs, max_epochs,
    miou_all_background, pixel_accuracy_all_background}.
    """
    images, maps = train  # maps stay in their stored dtype (uint8 from datasets): made long per batch
    test_maps = test[1]
    if maps.shape[-2:] != images.shape[-2:]:
        raise UserError(f"class maps of size {tuple(maps.shape[-2:])} do not fit images of size {tuple(images.shape[-2:])}.")
    stages = list(cfg.stages or encoder.stage_names)
    unknown = [s for s in stages if s not in encoder.stage_names]
    if unknown:
        raise UserError(f"encoder has no stage {unknown[0]!r}; its stages are {', '.join(encoder.stage_names)}.")
    stages = [s for s in encoder.stage_names if s in stages]  # in the encoder's order
    num_classes = max(largest_label(m, cfg.ignore_index) for m in (maps, test_maps)) + 1
    if num_classes == 0:
        raise UserError(f"segmentation needs labelled pixels, and every pixel of its class maps is {cfg.ignore_index} (ignored).")
    size = images.shape[-1]
    channels = {s: encoder.feature_shapes()[s][0] for s in stages}
    frozen = cfg.mode == "frozen"
    device = device_of(encoder)  # the model, its batches, flips, targets and confusion matrices go where the encoder is

    @torch.no_grad()
    def confusion(model, forward, targets, idx):
        """(K, K) on the CPU, counted on the device chunk by chunk: only the counts leave it, not the maps.
        forward(model, indices) -> class scores (B, K, S, S)."""
        total = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        for chunk in idx.split(500):
            total += confusion_matrix(forward(model, chunk).argmax(1), read_rows(targets, chunk).to(device), num_classes,
                                      cfg.ignore_index)
        return total.cpu()

    def miou(model, forward, idx):
        return segmentation_scores(confusion(model, forward, maps, idx))["miou"]

    fit, val = carve_validation(len(images), 1.0, cfg.val_fraction, cfg.seed)
    schedule = dict(fit=fit, val=val, lrs=cfg.lrs, max_epochs=cfg.max_epochs, patience=cfg.patience,
                    batch_size=cfg.batch_size, optimizer=functools.partial(torch.optim.Adam, weight_decay=cfg.weight_decay),
                    seed=cfg.seed, selection=cfg.selection)
    if frozen:
        # One head per learning rate, all trained in one pass on the same features (computed once).
        encoder = recalibrated(encoder, images)
        train_inputs, test_inputs = stage_maps(encoder, images, stages), stage_maps(encoder, test[0], stages)

        def forward_on(features):
            return lambda head, idx: head({s: features[s][idx].to(device) for s in stages})

        def batch_fn(idx, gen):
            return {s: train_inputs[s][idx].to(device) for s in stages}, read_rows(maps, idx).to(device).long()

        chosen = train_heads_and_select(
            build=lambda: FCNHead(channels, num_classes, size).to(device), batch_fn=batch_fn,
            loss_fn=lambda head, batch: F.cross_entropy(head(batch[0]), batch[1], ignore_index=cfg.ignore_index),
            score_fn=lambda heads, idx: [miou(head, forward_on(train_inputs), idx) for head in heads], **schedule)
    else:
        train_inputs, test_inputs = images, test[0]

        def forward_on(inputs):
            return lambda model, idx: model(inputs[idx].to(device))

        def loss_fn(model, idx, gen):
            x, target = images[idx].to(device), read_rows(maps, idx).to(device).long()
            if cfg.flip:  # drawn on the CPU from the run's seeded generator, applied on the device
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
                target = torch.where(flip.view(-1, 1, 1), target.flip(-1), target)
            return F.cross_entropy(model(x), target, ignore_index=cfg.ignore_index)

        chosen = train_and_select(
            build=lambda: FCN(copy.deepcopy(encoder), FCNHead(channels, num_classes, size)).to(device), loss_fn=loss_fn,
            score_fn=lambda model, idx: miou(model, forward_on(train_inputs), idx), **schedule)
    scores = segmentation_scores(confusion(chosen.model.eval(), forward_on(test_inputs), test_maps, torch.arange(len(test_maps))))
    background = segmentation_scores(sum(confusion_matrix(torch.zeros_like(t), t, num_classes, cfg.ignore_index)
                                         for t in map_chunks(test_maps)))
    return {**scores, "val_miou": chosen.val_score, **chosen.metrics(cfg.lrs),
            "miou_all_background": background["miou"], "pixel_accuracy_all_background": background["pixel_accuracy"]}
