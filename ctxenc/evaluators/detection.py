"""Object detection with the encoder as the backbone of torchvision's Faster R-CNN (the paper's VOC07 test).

The paper fine-tunes Fast R-CNN (Girshick 2015) from its AlexNet: RoI max pooling on conv5
replaces pool5, then fully connected layers score the classes and regress the boxes of each
region. Faster R-CNN is that detector with the external proposals (selective search) replaced by
a region proposal network on the same feature map, so it is the closest to the paper that runs
without a proposal generator; FCOS, anchor-free, would replace the very head the features feed
in the paper (and its towers of 3x3 convolutions cost more on a CPU). As Fast R-CNN:

- one feature map, by default the deepest stage wider than `roi_size` cells (AlexNet at 227 px:
  conv5 13x13, not pool5 6x6; the small encoder at 64 px: conv3 8x8, stride 8);
- RoI max pooling to `roi_size` x `roi_size` (`RoIPooling`: Fast R-CNN's operator, and on a CPU
  its backward pass costs a tenth of RoIAlign's), two fully connected layers of
  `representation_size`, `rois_per_image` regions sampled per training image (Fast R-CNN: 64, a
  quarter of them positives), difficult objects left out of training, random horizontal flips;
- anchors sized as fractions of the input side, at three aspect ratios.

The images reach torchvision as they are ([-1, 1], the encoder's scale): its transform is
told mean 0, std 1 (no second normalisation), min_size = max_size = the input size (it would
resize to 800 px otherwise) and size_divisible 1 (no padding), so the stages see the maps they
were trained on. `finetune` trains the encoder too, `frozen` keeps it fixed (BatchNorm included).

SGD with momentum, a linear warm-up over the first epoch and step decay (torchvision's detection
recipe, Fast R-CNN's too), the steps placed by validation: for each learning rate of the grid,
after `patience` epochs without a better validation mAP the rate drops 10x, up to `decays`
times, and the next such plateau (or `max_epochs`) ends the run. At a constant rate the
validation mAP was still creeping up after 20 epochs (FashionScenes, random init: chosen epoch 19
and 20 of 20); one drop brings it to its plateau within a few epochs. The (learning rate,
epoch) of the best validation mAP is kept, with the drops made before it (`lr_drops`). A
learning rate whose loss turns non-finite ends its run at the end of that epoch.

Scores on the test split (fractions in [0, 1]): `map`, VOC2007's 11-point mAP at IoU 0.5
(difficult objects neither true nor false positives); `map_auc`, the VOC2010+ area AP at 0.5;
`map_coco`, COCO's mAP@[.5:.95]; `ap/<k>`, the 11-point AP of class k.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ctxenc.data.cache import read_rows
from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.metrics import coco_map, detection_average_precision, mean_detection_ap
from ctxenc.evaluators.features import device_of, recalibrated
from ctxenc.evaluators.selection import (DEFAULT_SELECTION, carve_validation, check_schedule, train_and_select,
                                         train_heads_and_select)
from ctxenc.io import atomic_write

if TYPE_CHECKING:  # torchvision is imported where it is used: importing it costs ~1.5 s and ~160 MB of RSS
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.image_list import ImageList

MODES = ("finetune", "frozen")
PREDICTION_FIGURE_IMAGES = 8


@dataclass(frozen=True)
class DetectionConfig:
    """mode: finetune (train the encoder too) or frozen; stage: the encoder stage the detector reads
    (None: the deepest wider than roi_size cells); lrs: the learning-rate grid (SGD, momentum);
    max_epochs / patience / decays: a 10x drop of the learning rate after `patience` epochs without a
    better validation mAP, `decays` times, then a stop at the next plateau; anchor_fractions: anchor sides as
    fractions of the input side, each at aspect_ratios (height / width); roi_size: RoI pooling output
    cells; representation_size: width of the two fully connected layers; rois_per_image: regions
    sampled per image in training; proposals: regions kept per image at test; flip: random
    horizontal flips in training; selection: how the grid runs, `grid` (every rate to its own stop)
    or `halving` (the worse rates cut early; frozen trains every rate's head in one pass either way,
    and `halving` stops the losing heads at its rungs); predictions_out: a .pt file for the test
    predictions of the first 8 images (a figure), or None."""

    target: ClassVar[str] = "boxes"

    mode: str = "finetune"
    stage: str | None = None
    lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    max_epochs: int = 20
    patience: int = 3
    decays: int = 1
    batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    anchor_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    roi_size: int = 6
    representation_size: int = 256
    rois_per_image: int = 64
    proposals: int = 300
    flip: bool = True
    selection: str = DEFAULT_SELECTION
    seed: int = 0
    predictions_out: str | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"detection mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        check_schedule(self.lrs, self.max_epochs, self.patience, "detection", self.selection)
        if self.decays < 0:
            raise UserError(f"detection decays must be >= 0 (drops of the learning rate), got {self.decays}.")
        if not 0 < self.val_fraction < 1 or self.batch_size < 1:
            raise UserError("detection needs a validation fraction in (0, 1) and a batch size >= 1.")
        if not self.anchor_fractions or not all(0 < f for f in self.anchor_fractions) or not self.aspect_ratios:
            raise UserError("detection needs positive anchor fractions of the input side and at least one aspect ratio.")
        if self.roi_size < 1 or self.representation_size < 1 or self.rois_per_image < 1 or self.proposals < 1:
            raise UserError("detection needs roi_size, representation_size, rois_per_image and proposals >= 1.")


class StageBackbone(nn.Module):
    """encoder -> {stage: (B, C, h, w)}, the one feature map the detector reads; `out_channels` = C.

    Frozen: no gradient reaches the encoder and it stays in eval mode (its BatchNorm statistics
    fixed) while the detector trains.
    """

    def __init__(self, encoder: Encoder, stage: str, frozen: bool):
        super().__init__()
        self.encoder, self.stage, self.frozen = encoder, stage, frozen
        self.out_channels = encoder.feature_shapes()[stage][0]
        encoder.requires_grad_(not frozen)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return {self.stage: self.encoder.forward_features(x, until=self.stage)[self.stage]}

    def train(self, mode: bool = True) -> StageBackbone:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self


class RoIPooling(nn.Module):
    """Fast R-CNN's RoI max pooling on one stage, called as torchvision's RoI heads call their pooler:
    ({stage: (B, C, h, w)}, proposals [(R_i, 4)] in input pixels, image sizes) -> (sum R_i, C, size, size).

    The stage's stride is measured (map width / image width), not rounded to a power of 2 as
    torchvision's MultiScaleRoIAlign does (AlexNet's conv5 is 13 cells for 227 px). Max pooling's
    backward pass only routes each cell's gradient to its maximum: on a CPU it costs a tenth of RoIAlign's.
    """

    def __init__(self, stage: str, size: int):
        super().__init__()
        self.stage, self.size = stage, size

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        from torchvision.ops import roi_pool

        fmap = features[self.stage]
        return roi_pool(fmap, proposals, self.size, fmap.shape[-1] / image_shapes[0][1])


def default_stage(encoder: Encoder, roi_size: int) -> str:
    """The deepest stage whose map is wider than roi_size cells (else the first): pooling a region of a
    map no wider than the output grid only repeats cells (AlexNet: conv5 13x13, not pool5 6x6)."""
    shapes = encoder.feature_shapes()
    wide = [s for s in encoder.stage_names if min(shapes[s][1:]) > roi_size]
    return wide[-1] if wide else encoder.stage_names[0]


def build_detector(encoder: Encoder, num_classes: int, size: int, cfg: DetectionConfig) -> FasterRCNN:
    """Faster R-CNN on a deep copy of `encoder`: K classes (+ background), images of size x size in [-1, 1]."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    stage = cfg.stage or default_stage(encoder, cfg.roi_size)
    backbone = StageBackbone(copy.deepcopy(encoder), stage, cfg.mode == "frozen")
    anchors = AnchorGenerator(sizes=(tuple(max(1, round(f * size)) for f in cfg.anchor_fractions),),
                              aspect_ratios=(tuple(cfg.aspect_ratios),))
    channels = backbone.out_channels
    model = FasterRCNN(
        backbone,
        min_size=size, max_size=size, image_mean=[0.0] * encoder.in_channels, image_std=[1.0] * encoder.in_channels,
        size_divisible=1,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(channels * cfg.roi_size**2, cfg.representation_size),
        box_predictor=FastRCNNPredictor(cfg.representation_size, num_classes + 1),
        rpn_pre_nms_top_n_test=max(1000, cfg.proposals), rpn_post_nms_top_n_test=cfg.proposals,
        box_batch_size_per_image=cfg.rois_per_image,
        # The best 100 detections of an image all count, whatever their score (torchvision drops those
        # below 0.05): the devkit ranks whatever it is given, and a cut only lowers a weak detector's AP to 0.
        box_score_thresh=0.0, box_detections_per_img=100,
    )
    # The constructor accepts only its RoIAlign as pooler; the RoI heads call any pooler alike.
    model.roi_heads.box_roi_pool = RoIPooling(stage, cfg.roi_size)
    return model


def ground_truth(boxes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """boxes: int (N, M, 5 or 6) rows (class, x0, y0, x1, y1[, difficult]) pixel-inclusive, -1 unused
    -> per image {"boxes": float (G, 4) continuous (x1 + 1, y1 + 1), "labels": (G,), "difficult": bool (G,)}."""
    out = []
    for rows in boxes.long():
        rows = rows[rows[:, 0] >= 0]
        difficult = rows[:, 5] == 1 if rows.shape[1] > 5 else torch.zeros(len(rows), dtype=torch.bool)
        xyxy = rows[:, 1:5].float() + torch.tensor([0.0, 0.0, 1.0, 1.0])
        out.append({"boxes": xyxy, "labels": rows[:, 0], "difficult": difficult})
    return out


def check_boxes(images: torch.Tensor, boxes: torch.Tensor, split: str) -> None:
    """One sentence for boxes that do not fit their images."""
    if boxes.dim() != 3 or boxes.shape[-1] not in (5, 6) or len(boxes) != len(images):
        raise UserError(f"detection needs {split} boxes of shape ({len(images)}, objects, 5 or 6), got {tuple(boxes.shape)}.")
    used = boxes[..., 0] >= 0
    xyxy = boxes[..., 1:5][used]
    size = images.shape[-1]
    if len(xyxy) and (xyxy.min() < 0 or xyxy.max() >= size or (xyxy[:, 2] < xyxy[:, 0]).any() or (xyxy[:, 3] < xyxy[:, 1]).any()):
        raise UserError(f"some {split} boxes are not within their {size} x {size} images or end before they start.")


def detector_outputs(model: FasterRCNN, batch: ImageList, features: dict[str, torch.Tensor],
                     targets: list[dict] | None = None) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """torchvision's Faster R-CNN forward after its backbone, on `features` of `batch` (already through
    `model.transform`): (detections, losses), losses in training mode only. Frozen heads share one
    backbone pass."""
    proposals, rpn_losses = model.rpn(batch, features, targets)
    detections, roi_losses = model.roi_heads(features, proposals, batch.image_sizes, targets)
    return detections, {**rpn_losses, **roi_losses}


@torch.no_grad()
def predict_each(models: list[FasterRCNN], backbone: nn.Module, images: torch.Tensor,
                 batch_size: int = 64) -> list[list[dict[str, torch.Tensor]]]:
    """images (N, C, S, S) -> for each model, per image {"boxes": (D, 4) continuous, "scores": (D,), "labels": (D,)
    in [0, K)} on the CPU; `backbone` (the models' own, or one frozen backbone they share) runs once a batch."""
    for model in models:
        model.eval()
    device = next(models[0].parameters()).device
    out = [[] for _ in models]
    for i in range(0, len(images), batch_size):
        batch = list(images[i : i + batch_size].to(device))
        sizes = [tuple(x.shape[-2:]) for x in batch]
        transformed, _ = models[0].transform(batch)  # no parameters: the same for every model
        features = backbone(transformed.tensors)
        for model, predictions in zip(models, out):
            detections, _ = detector_outputs(model, transformed, features)
            for p in model.transform.postprocess(detections, transformed.image_sizes, sizes):
                predictions.append({"boxes": p["boxes"].cpu(), "scores": p["scores"].cpu(), "labels": p["labels"].cpu() - 1})
    return out


def predict(model: FasterRCNN, images: torch.Tensor, batch_size: int = 64) -> list[dict[str, torch.Tensor]]:
    """images (N, C, S, S) -> per image {"boxes": (D, 4) continuous, "scores": (D,), "labels": (D,) in [0, K)}, on the CPU."""
    return predict_each([model], model.backbone, images, batch_size)[0]


def training_batch(images: torch.Tensor, truth: list[dict], idx: torch.Tensor, flip: bool, gen: torch.Generator,
                   device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Images and torchvision targets (labels + 1; difficult objects left out, as Fast R-CNN trains) of a batch,
    on `device`, each image flipped horizontally with probability 0.5 when `flip` (drawn from `gen` on the CPU)."""
    size = images.shape[-1]
    flips = torch.rand(len(idx), generator=gen) < 0.5 if flip else torch.zeros(len(idx), dtype=torch.bool)
    batch = images[idx].to(device)  # one copy for the batch; its flips are made there
    batch = torch.where(flips.to(device).view(-1, 1, 1, 1), batch.flip(-1), batch)
    targets = []
    for i, f in zip(idx.tolist(), flips.tolist()):
        keep = ~truth[i]["difficult"]
        xyxy = truth[i]["boxes"][keep]
        if f:
            xyxy = torch.stack([size - xyxy[:, 2], xyxy[:, 1], size - xyxy[:, 0], xyxy[:, 3]], 1)
        targets.append({"boxes": xyxy.to(device), "labels": (truth[i]["labels"][keep] + 1).to(device)})
    return list(batch), targets


def detection(encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
              cfg: DetectionConfig = DetectionConfig()) -> dict[str, float]:
    """train, test: (images (N, C, S, S) in [-1, 1] or `ModelInputs`, boxes int (N, M, 5 or 6) rows (class, x0, y0, x1, y1[, difficult])
    in pixel-inclusive input coordinates, -1 rows unused).

    -> {map, map_auc, map_coco, ap/<k>, val_map, lr, lr_min, lr_max, lr_margin (with several rates), lr_drops,
    epochs, max_epochs}.
    """
    # The boxes are small and all needed (as ground truth): read into memory once, not through a
    # decoded-cache array's memory map, whose pages would stay resident.
    (images, boxes), (test_images, test_boxes) = ((x, read_rows(b)) for x, b in (train, test))
    check_boxes(images, boxes, "train")
    check_boxes(test_images, test_boxes, "test")
    if cfg.stage is not None and cfg.stage not in encoder.stage_names:
        raise UserError(f"encoder has no stage {cfg.stage!r}; its stages are {', '.join(encoder.stage_names)}.")
    truth, test_truth = ground_truth(boxes), ground_truth(test_boxes)
    if not any((~t["difficult"]).any() for t in truth):
        raise UserError("detection needs training images with boxes, and none of them has one that is not difficult.")
    num_classes = int(max(boxes[..., 0].max(), test_boxes[..., 0].max())) + 1
    size = images.shape[-1]
    device = device_of(encoder)  # the detector, its batches, flips and targets go where the encoder is (--device)

    def val_map(predictions, idx):
        """Validation mAP (0 when no validation image has a box that is not difficult)."""
        val_truth = [truth[i] for i in idx.tolist()]
        if not any((~t["difficult"]).any() for t in val_truth):
            return 0.0
        return mean_detection_ap(predictions, val_truth, num_classes)

    fit, val = carve_validation(len(images), 1.0, cfg.val_fraction, cfg.seed)
    schedule = dict(fit=fit, val=val, lrs=cfg.lrs, max_epochs=cfg.max_epochs, patience=cfg.patience,
                    batch_size=cfg.batch_size, seed=cfg.seed, decays=cfg.decays, warmup=True, selection=cfg.selection,
                    optimizer=functools.partial(torch.optim.SGD, momentum=cfg.momentum, weight_decay=cfg.weight_decay))
    if cfg.mode == "frozen":
        # Frozen features on honest BatchNorm statistics, as every frozen protocol; one detector head per
        # learning rate, all trained in one pass (halving cuts the losing ones), the frozen backbone run
        # once a batch for all of them: the heads, not the backbone, dominate the cost.
        encoder = recalibrated(encoder, images)
        shared = build_detector(encoder, num_classes, size, cfg).to(device).eval()

        def batch_fn(idx, gen):
            batch, targets = training_batch(images, truth, idx, cfg.flip, gen, device)
            return batch, targets, shared.backbone(shared.transform(batch)[0].tensors)

        def head_loss(head, batch):
            # Each head transforms the batch again (cheap): in training mode the transform draws from
            # torch's random state, the head's own, as the head's sequential run would.
            transformed, targets = head.transform(batch[0], batch[1])
            return sum(detector_outputs(head, transformed, batch[2], targets)[1].values())

        best = train_heads_and_select(
            build=lambda: build_detector(encoder, num_classes, size, cfg).to(device), batch_fn=batch_fn, loss_fn=head_loss,
            score_fn=lambda heads, idx: [val_map(p, idx) for p in predict_each(heads, shared.backbone, images[idx])],
            **schedule)
    else:
        def loss_fn(model, idx, gen):
            return sum(model(*training_batch(images, truth, idx, cfg.flip, gen, device)).values())

        best = train_and_select(
            build=lambda: build_detector(encoder, num_classes, size, cfg).to(device), loss_fn=loss_fn,
            score_fn=lambda model, idx: val_map(predict(model, images[idx]), idx), **schedule)
    predictions = predict(best.model, test_images)
    if cfg.predictions_out:
        shown = predictions[:PREDICTION_FIGURE_IMAGES]
        atomic_write(cfg.predictions_out, lambda f: torch.save({k: [p[k] for p in shown] for k in ("boxes", "labels", "scores")}, f))
    per_class = detection_average_precision(predictions, test_truth, num_classes, 0.5, "11point")
    present = [ap for ap in per_class if ap is not None]
    if not present:
        raise UserError(f"detection mAP needs a test box that is not difficult, and none of the {len(test_truth)} test images "
                        "has one; evaluate on more images (a larger --limit).")
    return {
        "map": sum(present) / len(present),
        "map_auc": mean_detection_ap(predictions, test_truth, num_classes, 0.5, "area"),
        "map_coco": coco_map(predictions, test_truth, num_classes),
        **{f"ap/{k}": ap for k, ap in enumerate(per_class) if ap is not None},
        "val_map": best.val_score, **best.metrics(cfg.lrs), "lr_drops": float(best.lr_drops),
    }
