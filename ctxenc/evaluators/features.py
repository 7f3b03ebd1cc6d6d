"""Extract frozen features once, then reuse them (as DINO's eval_knn does)."""

from __future__ import annotations

import torch

from ctxenc.encoders import Encoder


@torch.no_grad()
def extract_features(encoder: Encoder, images: torch.Tensor, stage: str | None = None, grid: int = 1,
                     batch_size: int = 1000) -> torch.Tensor:
    """images: (N, C, S, S) in [-1, 1] -> (N, D) pooled features of `stage` (default: the last).

    The encoder runs in eval mode: BatchNorm uses the running statistics gathered during
    pretraining, so a feature does not depend on the other images in its batch. Batches go to
    the encoder's device; the features come back to the CPU.
    """
    if stage is not None and stage not in encoder.stage_names:
        from ctxenc.errors import UserError

        raise UserError(f"encoder has no stage {stage!r}; its stages are {', '.join(encoder.stage_names)}.")
    encoder.eval()
    device = next(encoder.parameters()).device
    chunks = [encoder.pooled(images[i : i + batch_size].to(device), stage, grid).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(chunks)
