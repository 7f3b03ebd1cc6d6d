"""Seconds per epoch of the training evaluators, on FashionScenes-shaped random tensors.

    OMP_NUM_THREADS=1 python benchmarks/evaluator_speed.py [--images 2000] [--epochs 3] [--encoder small]

Fine-tuning (multi-label, the whole encoder + a linear head), FCN segmentation fine-tuned and
frozen: each runs one learning rate for `--epochs` epochs (no early stop), validation after every
epoch included; frozen segmentation's one-off cost (features, BatchNorm recalibration) is
timed apart and left out of its per-epoch figure. Printed: CPU seconds of this process (robust
on a machine shared with other jobs; with one thread they match wall time on an idle one) per
epoch and for a whole call.
"""

from __future__ import annotations

import argparse
import time

import torch

from ctxenc.encoders import create_encoder
from ctxenc.evaluators import FinetuneConfig, SegmentationConfig, finetune, segmentation


def scenes_like(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (n, 3, size, size) in [-1, 1], multi-hot labels (n, 10), class maps (n, size, size) in 0-10 and 255."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen) * 2 - 1
    labels = (torch.rand(n, 10, generator=gen) < 0.25).float()
    labels[labels.sum(1) == 0, 0] = 1.0
    maps = torch.randint(0, 11, (n, size, size), generator=gen)
    maps[torch.rand(n, size, size, generator=gen) < 0.05] = 255
    return images, labels, maps


def timed(fn) -> float:
    tic = time.process_time()
    fn()
    return time.process_time() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="training images (FashionScenes' train split: 2,000)")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--encoder", default="small")
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    torch.manual_seed(0)
    encoder = create_encoder(args.encoder, in_channels=3, input_size=args.size).eval()
    images, labels, maps = scenes_like(args.images + args.test_images, args.size, 0)
    n = args.images
    train_cls, test_cls = (images[:n], labels[:n]), (images[n:], labels[n:])
    train_seg, test_seg = (images[:n], maps[:n]), (images[n:], maps[n:])
    e = args.epochs
    schedule = dict(lrs=(1e-3,), max_epochs=e, patience=e)
    print(f"{args.encoder} encoder, {n} train / {args.test_images} test images of {args.size} px, "
          f"{torch.get_num_threads()} threads, {e} epochs each")
    runs = {
        "finetune (map)": lambda: finetune(encoder, train_cls, test_cls, FinetuneConfig(min_steps=0, **schedule)),
        "segmentation finetune": lambda: segmentation(encoder, train_seg, test_seg, SegmentationConfig(mode="finetune", **schedule)),
        "segmentation frozen": lambda: segmentation(encoder, train_seg, test_seg, SegmentationConfig(mode="frozen", **schedule)),
    }
    timed(runs["finetune (map)"])  # warm-up: first calls allocate and initialise
    # The frozen protocol's fixed cost (recalibration + features of train and test), measured alone.
    one_epoch_frozen = timed(lambda: segmentation(encoder, train_seg, test_seg,
                                                  SegmentationConfig(mode="frozen", lrs=(1e-3,), max_epochs=1, patience=1)))
    for name, run in runs.items():
        total = timed(run)
        per_epoch = (total - one_epoch_frozen) / (e - 1) if name == "segmentation frozen" and e > 1 else total / e
        print(f"{name:24s} {per_epoch:7.2f} CPU s/epoch   ({total:6.1f} CPU s for {e} epochs)")


if __name__ == "__main__":
    main()
