"""Metrics of the transfer tasks: average precision (multi-label classification and detection) and
mean IoU (segmentation).

Average precision comes in the flavours the benchmarks of the paper's era report:

- `area` (classification): non-interpolated, sum over thresholds of (R_n - R_{n-1}) * P_n, as
  scikit-learn's `average_precision_score`;
- `11point`: the VOC2007 devkit's, the mean over recall levels t = 0, 0.1, ..., 1 of the highest
  precision reached at a recall >= t (what the paper's VOC07 numbers are);
- `area` (detection): the VOC2010+ devkit's area under the monotone precision envelope;
- COCO's mAP@[.5:.95]: 101-point interpolation averaged over IoU thresholds 0.5, 0.55, ..., 0.95.
"""

from __future__ import annotations

import numpy as np
import torch

from ctxenc.errors import UserError

INTERPOLATIONS = ("area", "11point")
COCO_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def _check_interpolation(interpolation: str) -> None:
    if interpolation not in INTERPOLATIONS:
        raise UserError(f"average precision interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}.")


def eleven_point(precision: torch.Tensor, recall: torch.Tensor) -> float:
    """The VOC2007 devkit's AP: mean over t in {0, 0.1, ..., 1} of max(precision[recall >= t]), 0 when none.

    precision, recall: (T,) the points of a precision-recall curve, in any order.
    """
    total = 0.0
    for t in torch.linspace(0, 1, 11, dtype=torch.float64):
        reached = precision[recall >= t - 1e-12]  # 0.3 in binary is not 3 * 0.1: compare with a tolerance
        total += float(reached.max()) if len(reached) else 0.0
    return total / 11


def average_precision(scores: torch.Tensor, targets: torch.Tensor, interpolation: str = "area") -> float:
    """scores, targets: (N,), targets in {0, 1} with at least one positive -> AP in [0, 1].

    Tied scores form one threshold (one point of the curve). `area`: non-interpolated AP, the
    same definition as scikit-learn's `average_precision_score`; `11point`: the VOC2007 devkit's
    interpolation, which reads slightly higher and is what the paper's VOC07 table reports.
    """
    _check_interpolation(interpolation)
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], targets[order].double()
    tps, fps = y.cumsum(0), (1 - y).cumsum(0)
    # The last index of each run of equal scores: one threshold per distinct score.
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1], device=s.device)])
    tp, fp = tps[last], fps[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    if interpolation == "11point":
        return eleven_point(precision, recall)
    steps = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((steps * precision).sum())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor, interpolation: str = "area") -> float:
    """scores: (N, K) real, targets: (N, K) multi-hot -> the mean over classes of their AP.

    Entries of -1 are ignored: VOC07's "difficult only" ground truth (the devkit's 0), an image
    that counts neither as a positive nor as a negative for that class. Classes without a
    positive in `targets` have no AP and are left out of the mean. `interpolation`: as
    `average_precision`.
    """
    _check_interpolation(interpolation)
    aps = []
    for k in range(targets.shape[1]):
        keep = targets[:, k] >= 0
        if (targets[keep, k] == 1).any():
            aps.append(average_precision(scores[keep, k], targets[keep, k], interpolation))
    if not aps:
        raise UserError(f"mean average precision needs a class with a positive example, and none of the "
                        f"{len(targets)} images has one; evaluate on more images (a larger --limit).")
    return sum(aps) / len(aps)


def _match(det_boxes: torch.Tensor, gt_boxes: torch.Tensor, gt_difficult: torch.Tensor, iou_threshold: float,
           coco: bool) -> torch.Tensor:
    """One image, one class; det_boxes (D, 4) sorted by decreasing score, gt_boxes (G, 4), gt_difficult (G,) bool
    -> int8 (D,): 1 true positive, 0 false positive, -1 ignored (matched to a difficult ground truth).

    VOC (devkit): a detection takes the ground truth it overlaps most; IoU > threshold and that
    ground truth not yet taken -> TP, already taken -> FP (a duplicate). COCO: a detection takes
    the ground truth of highest IoU >= threshold among those not yet taken, preferring ones
    that are not ignored.
    """
    from torchvision.ops import box_iou  # here: torchvision.ops costs ~160 MB and 1.5 s to import

    outcome = torch.zeros(len(det_boxes), dtype=torch.int8)
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return outcome
    iou = box_iou(det_boxes.double(), gt_boxes.double())  # (D, G)
    if not coco:
        # Each detection's best ground truth; of the detections above the threshold that share one,
        # the first (highest score) takes it, later ones are duplicates (a loop over G, not D).
        best_iou, best = iou.max(1)
        above = best_iou > iou_threshold
        for g in range(len(gt_boxes)):
            hits = torch.nonzero(above & (best == g)).flatten()
            if gt_difficult[g]:
                outcome[hits] = -1
            elif len(hits):
                outcome[hits[0]] = 1
        return outcome
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for d in torch.nonzero((iou >= iou_threshold).any(1)).flatten().tolist():  # the others match nothing
        for ignored in (False, True):
            free = (~taken) & (gt_difficult == ignored) & (iou[d] >= iou_threshold)
            if free.any():
                g = int(torch.where(free, iou[d], -1.0).argmax())
                outcome[d] = -1 if ignored else 1
                taken[g] = not ignored
                break
    return outcome


def detection_average_precision(detections: list[dict[str, torch.Tensor]], ground_truth: list[dict[str, torch.Tensor]],
                                num_classes: int, iou_threshold: float = 0.5, interpolation: str = "11point",
                                coco: bool = False) -> list[float | None]:
    """Per-class AP of detections against ground truth, as the PASCAL VOC devkit (or COCO) computes it.

    detections[i], image i: {"boxes": (D, 4) float (x0, y0, x1, y1) in continuous pixel coordinates
    (a pixel-inclusive box x0..x1 spans x0 to x1 + 1), "scores": (D,), "labels": (D,) in [0, K)}.
    ground_truth[i]: {"boxes": (G, 4) as above, "labels": (G,), "difficult": (G,) bool}.

    Detections of a class are ranked by score over all images (ties keep image order) and matched
    greedily (see `_match`); one matched to a difficult ground truth is neither a true nor a false
    positive, and difficult ground truths do not count among the positives. interpolation:
    `11point` (VOC2007), `area` (VOC2010+: area under the monotone envelope of precision);
    coco=True: COCO's matching and 101-point interpolation (`interpolation` is not used).
    -> [AP of class k, or None where k has no non-difficult ground truth], length K.
    """
    _check_interpolation(interpolation)
    if len(detections) != len(ground_truth):
        raise UserError(f"{len(detections)} images of detections for {len(ground_truth)} images of ground truth.")
    aps: list[float | None] = []
    for k in range(num_classes):
        scores, outcomes, positives = [], [], 0
        for det, gt in zip(detections, ground_truth):
            mine, theirs = det["labels"] == k, gt["labels"] == k
            if not mine.any() and not theirs.any():
                continue
            order = torch.argsort(det["scores"][mine], descending=True, stable=True)
            difficult = gt["difficult"][theirs].bool()
            positives += int((~difficult).sum())
            scores.append(det["scores"][mine][order])
            outcomes.append(_match(det["boxes"][mine][order], gt["boxes"][theirs], difficult, iou_threshold, coco))
        if positives == 0:
            aps.append(None)
            continue
        s, o = torch.cat(scores), torch.cat(outcomes)
        o = o[torch.argsort(s, descending=True, stable=True)]
        o = o[o >= 0].double()  # ignored detections leave the ranking
        tp, fp = o.cumsum(0), (1 - o).cumsum(0)
        recall = tp / positives
        precision = tp / (tp + fp).clamp_min(torch.finfo(torch.float64).eps)
        if coco:
            aps.append(_coco_101_point(precision, recall))
        elif interpolation == "11point":
            aps.append(eleven_point(precision, recall))
        else:
            aps.append(_envelope_area(precision, recall))
    return aps


def _envelope_area(precision: torch.Tensor, recall: torch.Tensor) -> float:
    """The VOC2010+ devkit's AP: area under max_{r' >= r} precision(r'), recall (T,) non-decreasing."""
    mrec = torch.cat([torch.zeros(1, dtype=recall.dtype), recall, torch.ones(1, dtype=recall.dtype)])
    mpre = torch.cat([torch.zeros(1, dtype=precision.dtype), precision, torch.zeros(1, dtype=precision.dtype)])
    mpre = mpre.flip(0).cummax(0).values.flip(0)
    return float((torch.diff(mrec) * mpre[1:]).sum())


def _coco_101_point(precision: torch.Tensor, recall: torch.Tensor) -> float:
    """pycocotools' AP: the precision envelope read at recall 0, 0.01, ..., 1 (first point with recall >= r), 0 beyond."""
    if len(precision) == 0:
        return 0.0
    envelope = precision.flip(0).cummax(0).values.flip(0)
    levels = torch.from_numpy(np.linspace(0.0, 1.0, 101))  # the very floats pycocotools compares with
    index = torch.searchsorted(recall.contiguous(), levels, side="left")
    reached = index < len(envelope)
    return float(torch.where(reached, envelope[index.clamp_max(len(envelope) - 1)], 0.0).sum() / 101)


def mean_detection_ap(detections: list[dict[str, torch.Tensor]], ground_truth: list[dict[str, torch.Tensor]],
                      num_classes: int, iou_threshold: float = 0.5, interpolation: str = "11point", coco: bool = False) -> float:
    """The mean of `detection_average_precision` over the classes that have a non-difficult ground truth."""
    aps = [ap for ap in detection_average_precision(detections, ground_truth, num_classes, iou_threshold, interpolation, coco)
           if ap is not None]
    if not aps:
        raise UserError(f"detection mAP needs a ground-truth box that is not difficult, and none of the {len(ground_truth)} "
                        "images has one; evaluate on more images (a larger --limit).")
    return sum(aps) / len(aps)


def coco_map(detections: list[dict[str, torch.Tensor]], ground_truth: list[dict[str, torch.Tensor]], num_classes: int) -> float:
    """COCO's mAP@[.5:.95]: `mean_detection_ap` with coco=True averaged over IoU 0.5, 0.55, ..., 0.95."""
    return sum(mean_detection_ap(detections, ground_truth, num_classes, t, coco=True) for t in COCO_IOU_THRESHOLDS) / 10


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """predicted, target: integer maps of any equal shape -> int64 (K, K), rows = target, cols = predicted.

    Pixels whose target is `ignore_index` are not counted.
    """
    keep = target != ignore_index
    t, p = target[keep].long(), predicted[keep].long()
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).view(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor, class_names: list[str] | None = None) -> dict[str, float]:
    """confusion (K, K) -> {"miou", "pixel_accuracy", "iou/<class>"...}.

    IoU_k = TP / (TP + FP + FN) over the whole split (as VOC's devkit); mIoU averages the classes
    that occur in the target or the prediction (background included).
    """
    confusion = confusion.double()
    tp = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    iou = tp / union.clamp_min(1)
    names = class_names or [str(k) for k in range(len(tp))]
    scores = {
        "miou": float(iou[present].mean()),
        "pixel_accuracy": float(tp.sum() / confusion.sum()),
    }
    scores.update({f"iou/{names[k]}": float(iou[k]) for k in range(len(tp)) if present[k]})
    return scores
