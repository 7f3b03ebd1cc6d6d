import pytest
import torch
from sklearn.metrics import average_precision_score

from ctxenc.errors import UserError
from ctxenc.evaluators.metrics import (average_precision, coco_map, confusion_matrix, detection_average_precision,
                                       mean_average_precision, mean_detection_ap, segmentation_scores)


def test_average_precision_by_hand():
    # Ranked: +, -, +, -. Precision at the two recall steps: 1/1 and 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3.
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert average_precision(scores, torch.tensor([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # Tied scores form one threshold: {+, -} at 0.5 then + at 0.1 -> 0.5 * 1/2 + 0.5 * 2/3.
    assert average_precision(torch.tensor([0.5, 0.5, 0.1]), torch.tensor([1, 0, 1])) == pytest.approx(0.25 + 1 / 3)
    assert average_precision(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 1, 0])) == 1.0


def test_average_precision_matches_sklearn():
    gen = torch.Generator().manual_seed(0)
    for trial in range(50):
        n = int(torch.randint(2, 60, (1,), generator=gen))
        scores = torch.randint(0, 6, (n,), generator=gen).float() if trial % 2 else torch.randn(n, generator=gen)
        targets = (torch.rand(n, generator=gen) < 0.3).long()
        targets[0] = 1
        assert average_precision(scores, targets) == pytest.approx(average_precision_score(targets.numpy(), scores.numpy()), abs=1e-12)


def test_mean_average_precision_leaves_out_classes_without_positives():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.4], [0.7, 0.3, 0.9]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # class 0: + then - -> 1; class 1: ranked 0.8 (+) first -> 1; class 2 has no positive.
    assert mean_average_precision(scores, targets) == 1.0
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    # class 0 ranked 0.9 (+), 0.7 (+) -> 1; class 1 -> 1.
    assert mean_average_precision(scores, targets) == 1.0
    targets = torch.tensor([[0, 0, 0], [1, 1, 0], [0, 0, 0]])
    # class 0: the positive is ranked last of 3 -> 1/3; class 1: first -> 1.
    assert mean_average_precision(scores, targets) == pytest.approx((1 / 3 + 1) / 2)


def test_miou_by_hand_with_ignore():
    target = torch.tensor([[0, 0, 1], [1, 2, 255]])
    predicted = torch.tensor([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(predicted, target, num_classes=3, ignore_index=255)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 1, 0]]  # the ignored pixel is not counted
    scores = segmentation_scores(cm, ["bg", "a", "b"])
    # IoU bg = 1 / (1 + 1), a = 2 / (2 + 2), b = 0 / 1.
    assert scores["iou/bg"] == 0.5 and scores["iou/a"] == 0.5 and scores["iou/b"] == 0.0
    assert scores["miou"] == pytest.approx(1 / 3)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 5)


def test_miou_leaves_out_classes_absent_from_target_and_prediction():
    cm = confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 1]), num_classes=4, ignore_index=255)
    scores = segmentation_scores(cm)
    assert scores["miou"] == 1.0 and "iou/3" not in scores


def test_map_ignores_difficult_only_entries():
    """-1 marks VOC07's "difficult only": neither positive nor negative for that class."""
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    with_difficult = torch.tensor([[0.0], [-1.0], [1.0], [0.0]])
    # Ignoring row 1 leaves scores 0.9 (neg), 0.7 (pos), 0.6 (neg): the positive ranks second, AP = 1/2.
    assert mean_average_precision(scores, with_difficult) == pytest.approx(0.5)
    # Counted as a negative instead, the positive would rank third: AP = 1/3.
    assert mean_average_precision(scores, with_difficult.clamp_min(0)) == pytest.approx(1 / 3)


def test_eleven_point_classification_ap_by_hand():
    # Ranked +, -, +, -: (precision, recall) = (1, .5), (.5, .5), (2/3, 1), (.5, 1). Recall levels 0-0.5 reach
    # precision 1 (6 levels), 0.6-1 reach 2/3 (5 levels): (6 + 5 * 2/3) / 11 = 28/33; non-interpolated: 5/6.
    scores, targets = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0])
    assert average_precision(scores, targets, "11point") == pytest.approx(28 / 33)
    assert average_precision(scores, targets) == pytest.approx(5 / 6)
    assert mean_average_precision(scores[:, None], targets[:, None], "11point") == pytest.approx(28 / 33)
    with pytest.raises(UserError, match="interpolation must be one of area, 11point"):
        average_precision(scores, targets, "101point")


def _image(boxes, labels, scores=None, difficult=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long)}
    if scores is not None:
        out["scores"] = torch.tensor(scores)
    else:
        out["difficult"] = torch.tensor(difficult if difficult is not None else [False] * len(labels))
    return out


# Image 0: one object A; image 1: object B and a difficult object C.
A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]
TRUTH = [_image([A], [0]), _image([B, C], [0, 0], difficult=[False, True])]
# Ranked: A (TP), C (difficult: ignored), a miss (FP), A again (FP, a duplicate), B (TP).
DETECTIONS = [_image([A, [1, 1, 10, 10]], [0, 0], scores=[0.9, 0.6]),
              _image([C, [60, 60, 70, 70], [21, 20, 30, 30]], [0, 0, 0], scores=[0.8, 0.7, 0.5])]


def test_detection_ap_by_hand_with_a_difficult_box():
    # Without C's detection: TP, FP, FP, TP over 2 positives (C does not count): precision 1, 1/2, 1/3, 1/2 at
    # recall .5, .5, .5, 1. 11-point: levels 0-0.5 reach 1, levels 0.6-1 reach 1/2 -> (6 + 2.5) / 11.
    assert detection_average_precision(DETECTIONS, TRUTH, 1) == [pytest.approx(8.5 / 11)]
    # Area under the envelope: 0.5 * 1 + 0.5 * 1/2.
    assert mean_detection_ap(DETECTIONS, TRUTH, 1, interpolation="area") == pytest.approx(0.75)
    # Were C an ordinary background, its detection would be a false positive: TP, FP, FP, FP, TP -> (6 + 5 * 0.4) / 11.
    no_c = [TRUTH[0], _image([B], [0])]
    assert mean_detection_ap(DETECTIONS, no_c, 1) == pytest.approx(8 / 11)
    # Were C not difficult, it would be a third positive found second: TP, TP, FP, FP, TP over 3.
    c_counts = [TRUTH[0], _image([B, C], [0, 0])]
    assert mean_detection_ap(DETECTIONS, c_counts, 1, interpolation="area") == pytest.approx(2 / 3 * 1 + 1 / 3 * 3 / 5)


def test_detection_ap_leaves_out_classes_without_ground_truth():
    # Class 1 has only a detection, class 2 nothing: neither has an AP; the mean is class 0's.
    detections = [{**DETECTIONS[0], "labels": torch.tensor([0, 1])}, DETECTIONS[1]]
    aps = detection_average_precision(detections, TRUTH, 3)
    assert aps[1] is None and aps[2] is None
    assert mean_detection_ap(detections, TRUTH, 3) == pytest.approx(aps[0])
    with pytest.raises(UserError, match="needs a ground-truth box that is not difficult"):
        mean_detection_ap(detections, [_image([C], [0], difficult=[True]), _image([], [])], 3)


def test_coco_map_matches_torchmetrics():
    MeanAveragePrecision = pytest.importorskip("torchmetrics.detection").MeanAveragePrecision
    gen = torch.Generator().manual_seed(0)
    detections, truth = [], []
    for _ in range(16):
        g = int(torch.randint(1, 5, (1,), generator=gen))
        corner = torch.rand(g, 2, generator=gen) * 40
        gt = torch.cat([corner, corner + 8 + torch.rand(g, 2, generator=gen) * 20], 1).round()
        gt_labels = torch.randint(0, 3, (g,), generator=gen)
        d = int(torch.randint(0, 8, (1,), generator=gen))
        source = torch.randint(0, g, (d,), generator=gen)
        boxes = gt[source] + torch.randn(d, 4, generator=gen) * 4  # near a ground truth, some duplicates
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = torch.where(torch.rand(d, generator=gen) < 0.8, gt_labels[source], torch.randint(0, 3, (d,), generator=gen))
        detections.append({"boxes": boxes, "scores": torch.rand(d, generator=gen), "labels": labels})
        truth.append({"boxes": gt, "labels": gt_labels, "difficult": torch.zeros(g, dtype=torch.bool)})
    reference = MeanAveragePrecision(iou_type="bbox")
    reference.update(detections, [{"boxes": t["boxes"], "labels": t["labels"]} for t in truth])
    expected = reference.compute()
    assert coco_map(detections, truth, 3) == pytest.approx(float(expected["map"]), abs=1e-6)
    assert mean_detection_ap(detections, truth, 3, 0.5, coco=True) == pytest.approx(float(expected["map_50"]), abs=1e-6)
    assert mean_detection_ap(detections, truth, 3, 0.75, coco=True) == pytest.approx(float(expected["map_75"]), abs=1e-6)
