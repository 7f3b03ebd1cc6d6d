"""Pretraining throughput: images/s and achieved model GFLOP/s beside this machine's fp32 matmul peak.

    python benchmarks/speed_pretrain.py [--encoder small] [--batch-size 64] [--steps 40]

FLOPs of one training step (forward + backward + mask sampling excluded) are counted with
torch.utils.flop_counter on the real step; the peak is a large fp32 matmul timed in the same run.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ctxenc.encoders import create_encoder
from ctxenc.masks import sample_masks
from ctxenc.pretext import PretextConfig, build_pretext


def matmul_peak(n: int = 2048, seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of an n x n x n matmul, best of repeated runs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        tic = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - tic) / 1e9)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="small")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--adversarial", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = PretextConfig(name="context_encoder", mask="random_region", adversarial=args.adversarial)
    encoder = create_encoder(args.encoder, in_channels=args.channels, input_size=args.input_size)
    model = build_pretext(cfg, encoder, torch.zeros(args.channels)).train()
    opt = torch.optim.Adam(model.generator_parameters(), lr=2e-4, betas=(0.5, 0.999))
    images = torch.rand(args.batch_size * 8, args.channels, args.input_size, args.input_size) * 2 - 1

    def step(i: int) -> None:
        batch = images[(i % 8) * args.batch_size : (i % 8 + 1) * args.batch_size]
        masks = sample_masks(cfg.mask, len(batch), args.input_size, gen)
        loss = model.forward_loss(batch, masks)["loss_rec"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    counter = FlopCounterMode(display=False)
    with counter:
        step(0)
    flops_per_step = counter.get_total_flops()
    for i in range(3):  # warm-up
        step(i)
    tic = time.perf_counter()
    for i in range(args.steps):
        step(i)
    seconds = time.perf_counter() - tic
    peak = matmul_peak()

    images_per_s = args.steps * args.batch_size / seconds
    achieved = flops_per_step * args.steps / seconds / 1e9
    print(f"encoder {args.encoder} {args.channels}x{args.input_size}x{args.input_size}, context encoder (random_region, L2), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"model FLOPs per image (fwd+bwd): {flops_per_step / args.batch_size / 1e6:.1f} MFLOP")
    print(f"pretraining throughput:          {images_per_s:.0f} images/s ({seconds / args.steps * 1000:.1f} ms/step)")
    print(f"achieved model compute:          {achieved:.1f} GFLOP/s")
    print(f"fp32 matmul peak (2048^3):       {peak:.1f} GFLOP/s")
    print(f"fraction of peak:                {achieved / peak:.1%}")


if __name__ == "__main__":
    main()
