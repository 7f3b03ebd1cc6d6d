import pytest
import torch
from sklearn.metrics import average_precision_score

from ctxenc.evaluators.metrics import average_precision, confusion_matrix, mean_average_precision, segmentation_scores


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
