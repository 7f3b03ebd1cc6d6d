"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018; DINO's eval_knn).

The encoder's BatchNorm running statistics are first recalibrated on unmasked training images
(`features.recalibrated`); `accuracy_majority` (always the most frequent training class) is
returned beside the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ctxenc.encoders import Encoder
from ctxenc.errors import UserError
from ctxenc.evaluators.features import device_of, extract_features, recalibrated
from ctxenc.evaluators.finetune import trivial_reference


@dataclass(frozen=True)
class KNNConfig:
    """Cosine similarity, k neighbours voting with weight exp(similarity / temperature)."""

    target: ClassVar[str] = "labels"

    stage: str | None = None
    grid: int = 2
    k: int = 20
    temperature: float = 0.07


# Similarities per chunk of test images, (chunk, N train images): at most 1000 test images and
# 2^24 values (64 MB), so the chunk does not grow with the training split.
SIMILARITY_VALUES = 2**24


@torch.no_grad()
def knn_classifier(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   k: int, temperature: float, num_classes: int) -> torch.Tensor:
    """Features (N, D) -> predicted labels (M,) for the test features (M, D); cosine similarity.

    Both feature matrices are L2-normalised in place: a normalised copy would double the split's
    features, evaluation's bulk of memory.
    """
    F.normalize(train_features, dim=1, out=train_features)
    F.normalize(test_features, dim=1, out=test_features)
    k = min(k, len(train_features))
    chunk = min(1000, max(1, SIMILARITY_VALUES // len(train_features)))
    predictions = []
    for i in range(0, len(test_features), chunk):
        sims = test_features[i : i + chunk] @ train_features.T  # (chunk, N)
        top_sims, top_idx = sims.topk(k, dim=1)
        votes = torch.zeros(len(top_sims), num_classes, device=top_sims.device)
        votes.scatter_add_(1, train_labels[top_idx], (top_sims / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn(encoder: Encoder, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
        cfg: KNNConfig = KNNConfig()) -> dict[str, float]:
    """train, test: (images (N, C, S, S) in [-1, 1] or `ModelInputs`, labels (N,)). -> {accuracy, accuracy_majority}."""
    if train[1].dim() != 1:
        raise UserError("knn classifies single-label data only; use linear_probe or finetune for multi-label data.")
    encoder = recalibrated(encoder, train[0])
    device = device_of(encoder)  # the features and the vote live where the encoder is (--device)
    x_train = extract_features(encoder, train[0], cfg.stage, cfg.grid).to(device)
    x_test = extract_features(encoder, test[0], cfg.stage, cfg.grid).to(device)
    num_classes = int(max(train[1].max(), test[1].max())) + 1
    predicted = knn_classifier(x_train, train[1].to(device), x_test, cfg.k, cfg.temperature, num_classes).cpu()
    return {"accuracy": (predicted == test[1]).float().mean().item(), **trivial_reference(train[1], test[1])}
