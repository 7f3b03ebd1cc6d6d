"""Pretraining throughput side by side: ctxenc's models, PyTorch-GAN's context encoder, the matmul peak.

    python benchmarks/speed_pretrain.py [--threads 2] [--batch-size 64] [--rounds 3] [--steps 2]
                                        [--workloads paper,pytorch_gan,small,peak] [--device cpu] [--amp]
                                        [--channels-last]

Every workload is one full training step on random tensors (no data loading), in this process
with the same threads. ctxenc's workloads run the pretext's own `train_step` through the
engine's `StepContext` (masks drawn per step, fused Adam), exactly as `ctxenc pretrain` does:

- `paper`: ctxenc's inpainting model as the paper trains it: `dcgan` encoder, 128 px in, centre
  mask, `predict: center` (64 px out), L2 + adversarial loss; one discriminator step and one
  generator step.
- `pytorch_gan`: a re-implementation, from its published architecture, of PyTorch-GAN's
  `implementations/context_encoder` (eriklindernoren/PyTorch-GAN) -- the generator
  (128 px -> 64 px), its PatchGAN discriminator, L1 pixel + MSE adversarial loss, one G step and
  one D step as its script does them. A reference point only, never imported.
- `small`: the small encoder's context encoder on 1 x 32 x 32 (random-region masks, L2), the demo's.
- `alexnet`: the AlexNet context encoder at 227 px (random-region masks, L2), for GPU checks.
- `peak`: a 2048^3 fp32 matmul.

--channels-last applies to every model (measured: 15% slower to 9% faster on the CPU, so the
engine leaves it off).

FLOPs per step (forward + backward) are counted with torch.utils.flop_counter on one real step.
Timing interleaves the workloads over --rounds rounds (so a noisy, shared machine slows all of
them alike) and quotes the median seconds per step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ctxenc.device import autocast, grad_scaler, place, resolve_device
from ctxenc.data.transforms import to_model_input
from ctxenc.encoders import create_encoder
from ctxenc.engine import TrainConfig
from ctxenc.masks import sample_masks
from ctxenc.pretext import PretrainData, StepContext, build_pretext, pretext_spec


@dataclass
class Workload:
    name: str
    step: Callable[[], None]
    images_per_step: int
    flops_per_step: float = 0.0
    seconds: list[float] | None = None
    model: nn.Module | None = None


class PyTorchGANGenerator(nn.Module):
    """PyTorch-GAN's context-encoder generator: (B, 3, 128, 128) -> (B, 3, 64, 64) in [-1, 1].

    Five 4x4 stride-2 convs 3->64->64->128->256->512 (BatchNorm(eps=0.8) + LeakyReLU(0.2), none on
    the first) to 4x4, a 1x1 conv to 4000 channels, four 4x4 stride-2 transposed convs
    4000->512->256->128->64 (BatchNorm(eps=0.8) + ReLU) to 64x64, a 3x3 conv to RGB, Tanh.
    All convs carry biases, as in the original.
    """

    def __init__(self, channels: int = 3):
        super().__init__()

        def down(c_in: int, c_out: int, norm: bool = True) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 4, 2, 1), *([nn.BatchNorm2d(c_out, 0.8)] if norm else []), nn.LeakyReLU(0.2, True)]

        def up(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out, 0.8), nn.ReLU(True)]

        self.model = nn.Sequential(
            *down(channels, 64, norm=False), *down(64, 64), *down(64, 128), *down(128, 256), *down(256, 512),
            nn.Conv2d(512, 4000, 1),
            *up(4000, 512), *up(512, 256), *up(256, 128), *up(128, 64),
            nn.Conv2d(64, channels, 3, 1, 1), nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PyTorchGANDiscriminator(nn.Module):
    """PyTorch-GAN's context-encoder discriminator: (B, 3, 64, 64) -> patch logits (B, 1, 8, 8).

    3x3 convs 3->64 (stride 2), ->128 (stride 2), ->256 (stride 2), ->512 (stride 1), InstanceNorm
    + LeakyReLU(0.2) (no norm on the first), then a 3x3 conv to one channel.
    """

    def __init__(self, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for width, stride, norm in ((64, 2, False), (128, 2, True), (256, 2, True), (512, 1, True)):
            layers += [nn.Conv2d(c, width, 3, stride, 1), *([nn.InstanceNorm2d(width)] if norm else []), nn.LeakyReLU(0.2, True)]
            c = width
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def dcgan_init(module: nn.Module) -> None:
    """PyTorch-GAN's `weights_init_normal`: conv weights N(0, 0.02), BatchNorm weight N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def pytorch_gan_workload(batch: int, device: torch.device, amp: bool, channels_last: bool) -> Workload:
    """One iteration of PyTorch-GAN's context_encoder.py: G step (0.999 L1 + 0.001 MSE adv), then D step."""
    generator = place(PyTorchGANGenerator(), device, channels_last).train()
    discriminator = place(PyTorchGANDiscriminator(), device, channels_last).train()
    dcgan_init(generator), dcgan_init(discriminator)
    opt_g, opt_d = adam(generator.parameters()), adam(discriminator.parameters())
    scaler = grad_scaler(device, amp)
    images = place(torch.rand(batch, 3, 128, 128) * 2 - 1, device, channels_last)
    masked = images.clone()
    masked[..., 32:96, 32:96] = 1  # its centre mask fills with white
    parts = images[..., 32:96, 32:96].contiguous()
    valid, fake = torch.ones(batch, 1, 8, 8, device=device), torch.zeros(batch, 1, 8, 8, device=device)

    def step() -> None:
        opt_g.zero_grad()
        with autocast(device, amp):
            gen_parts = generator(masked)
            g_adv = F.mse_loss(discriminator(gen_parts), valid)
            g_loss = 0.001 * g_adv + 0.999 * F.l1_loss(gen_parts, parts)
        scaler.scale(g_loss).backward()
        scaler.step(opt_g)
        opt_d.zero_grad()
        with autocast(device, amp):
            d_loss = 0.5 * (F.mse_loss(discriminator(parts), valid) + F.mse_loss(discriminator(gen_parts.detach()), fake))
        scaler.scale(d_loss).backward()
        scaler.step(opt_d)
        scaler.update()

    return Workload("PyTorch-GAN context_encoder (128->64 px, L1+adv)", step, batch)


# ctxenc's models by workload name: (title, pretext, encoder, image channels, input size).
CTXENC_MODELS = {
    "paper": ("ctxenc paper model (dcgan, 128->64 px, L2+adv)",
              {"name": "context_encoder", "mask": "center", "predict": "center", "adversarial": True, "overlap_px": 4},
              "dcgan", 3, 128),
    "small": ("ctxenc small encoder (1x32 px, L2)", {"name": "context_encoder", "mask": "random_region"}, "small", 1, 32),
    "alexnet": ("ctxenc alexnet (3x227 px, L2)", {"name": "context_encoder", "mask": "random_region", "overlap_px": 7},
                "alexnet", 3, 227),
}


def ctxenc_workload(name: str, batch: int, device: torch.device, amp: bool = False, channels_last: bool = False,
                    context: type[StepContext] = StepContext) -> Workload:
    """One step of `ctxenc pretrain` for CTXENC_MODELS[name] on random images: the pretext's train_step (a
    discriminator step if adversarial, then the generator step) through `context` (the engine's StepContext;
    benchmarks/ddp_vs_allreduce.py passes another way of averaging gradients), then the loss scaler's update.
    `batch` is the global batch: under torchrun each process steps on its slice."""
    title, spec, encoder, channels, size = CTXENC_MODELS[name]
    torch.manual_seed(0)
    model = build_pretext(pretext_spec(spec), create_encoder(encoder, in_channels=channels, input_size=size),
                          PretrainData(torch.zeros(channels)))
    model = place(model, device, channels_last).train()
    scaler = grad_scaler(device, amp)
    optimizers = model.optimizers(TrainConfig(batch_size=batch))
    ctx = context(optimizers, device, amp, torch.Generator().manual_seed(0), batch, scaler, None)
    images = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    local = {"images": place(images[ctx.mine], device, channels_last)}

    def step() -> None:
        model.train_step(local, ctx)
        scaler.update()

    return Workload(title, step, batch, model=model)


def peak_workload(device: torch.device, n: int = 2048) -> Workload:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return Workload(f"fp32 matmul {n}^3", lambda: a @ b, 0, flops_per_step=2 * n**3)


def build(name: str, args: argparse.Namespace, device: torch.device) -> Workload:
    if name in CTXENC_MODELS:
        return ctxenc_workload(name, args.batch_size, device, args.amp, args.channels_last)
    if name == "pytorch_gan":
        return pytorch_gan_workload(args.batch_size, device, args.amp, args.channels_last)
    if name == "peak":
        return peak_workload(device)
    raise SystemExit(f"unknown workload {name!r}; choose from paper, pytorch_gan, small, alexnet, peak.")


def per_step_data_costs(batch: int, rounds: int = 20) -> dict[str, float]:
    """Median milliseconds of what the engine does per step besides the model (the small encoder's data)."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 256, (batch, 1, 28, 28), dtype=torch.uint8)
    costs = {f"sample_masks('random_region', {batch}, 32)": lambda: sample_masks("random_region", batch, 32, gen),
             f"to_model_input(uint8 {batch}x1x28x28, 32)": lambda: to_model_input(raw, 32)}
    out = {}
    for name, fn in costs.items():
        seconds = []
        for _ in range(rounds):
            tic = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - tic)
        out[name] = statistics.median(seconds) * 1000
    return out


def count_flops(work: Workload) -> None:
    """FLOPs of one step (forward + backward), counted on the real step."""
    if work.flops_per_step:
        return
    counter = FlopCounterMode(display=False)
    with counter:
        work.step()
    work.flops_per_step = counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="paper,pytorch_gan,small,peak", help="comma-separated, in order")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the median is quoted")
    parser.add_argument("--steps", type=int, default=2, help="steps per workload per round (the small model runs 20x more)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="float16 autocast on CUDA, bfloat16 on the CPU")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    works = [build(name, args, device) for name in args.workloads.split(",")]
    for work in works:
        count_flops(work)
        work.step()  # warm-up (oneDNN primitive caches, allocator)
        sync(device)
        work.seconds = []
    for _ in range(args.rounds):
        for work in works:
            # Small workloads run more steps per round so each timing spans at least ~1e11 FLOPs.
            steps = args.steps * max(1, round(1e11 / work.flops_per_step))
            sync(device)
            tic = time.perf_counter()
            for _ in range(steps):
                work.step()
            sync(device)
            work.seconds.append((time.perf_counter() - tic) / steps)

    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{'amp' if args.amp else 'fp32'}{', channels_last' if args.channels_last else ''}, "
          f"median of {args.rounds} interleaved rounds")
    print(f"| workload | ms/step | images/s | GFLOP/image | GFLOP/s |")
    print("|---|---|---|---|---|")
    rates = {}
    for name, work in zip(args.workloads.split(","), works):
        s = statistics.median(work.seconds)
        gflops = work.flops_per_step / s / 1e9
        ips = work.images_per_step / s
        rates[name] = (ips, gflops)
        per_image = f"{work.flops_per_step / work.images_per_step / 1e9:.3f}" if work.images_per_step else "-"
        print(f"| {work.name} | {s * 1000:.0f} | {f'{ips:.1f}' if ips else '-'} | {per_image} | {gflops:.1f} |")
    if "paper" in rates and "pytorch_gan" in rates:
        (ips_c, gf_c), (ips_p, gf_p) = rates["paper"], rates["pytorch_gan"]
        print(f"ctxenc paper / PyTorch-GAN: images/s x{ips_c / ips_p:.2f}, GFLOP/s x{gf_c / gf_p:.2f}")
    if "peak" in rates:
        for name in ("small", "paper", "pytorch_gan", "alexnet"):
            if name in rates:
                print(f"{name} share of matmul peak: {rates[name][1] / rates['peak'][1]:.1%}")
    if "small" in rates:
        step_ms = args.batch_size / rates["small"][0] * 1000
        for name, ms in per_step_data_costs(args.batch_size).items():
            print(f"per step, outside the model: {name} {ms:.2f} ms ({ms / step_ms:.0%} of the small encoder's step)")


if __name__ == "__main__":
    main()
