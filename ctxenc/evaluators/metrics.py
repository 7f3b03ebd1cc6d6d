"""Metrics of the transfer tasks: mean average precision (multi-label) and mean IoU (segmentation)."""

from __future__ import annotations

import torch

from ctxenc.errors import UserError


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """scores, targets: (N,), targets in {0, 1} with at least one positive -> AP in [0, 1].

    Non-interpolated AP, sum over thresholds of (R_n - R_{n-1}) * P_n, with tied scores forming one
    threshold: the same definition as scikit-learn's `average_precision_score` (VOC07's official
    devkit used an 11-point interpolation instead, which reads slightly higher).
    """
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], targets[order].double()
    tps, fps = y.cumsum(0), (1 - y).cumsum(0)
    # The last index of each run of equal scores: one threshold per distinct score.
    last = torch.cat([torch.nonzero(s[1:] != s[:-1]).flatten(), torch.tensor([len(s) - 1])])
    tp, fp = tps[last], fps[last]
    precision = tp / (tp + fp)
    recall = tp / tp[-1]
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return float((steps * precision).sum())


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """scores: (N, K) real, targets: (N, K) multi-hot -> the mean over classes of their AP.

    Entries of -1 are ignored: VOC07's "difficult only" ground truth (the devkit's 0), an image
    that counts neither as a positive nor as a negative for that class. Classes without a
    positive in `targets` have no AP and are left out of the mean.
    """
    aps = []
    for k in range(targets.shape[1]):
        keep = targets[:, k] >= 0
        if (targets[keep, k] == 1).any():
            aps.append(average_precision(scores[keep, k], targets[keep, k]))
    if not aps:
        raise UserError(f"mean average precision needs a class with a positive example, and none of the "
                        f"{len(targets)} images has one; evaluate on more images (a larger --limit).")
    return sum(aps) / len(aps)


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
