"""Multi-process gradient averaging: PyTorch's DistributedDataParallel (what ctxenc uses) against
the hand-written one it replaced (one flat all-reduce of every gradient after the backward pass).

    torchrun --standalone --nproc_per_node=2 benchmarks/ddp_vs_allreduce.py [--threads 1] [--rounds 5]
                                                                            [--workloads small,paper]

Each process builds the same pretext (same seed; `speed_pretrain.py`'s ctxenc workloads) twice, one
per way of averaging, and runs the engine's own step (the pretext's `train_step` through
`StepContext`) on random images, its half of a global batch. Timing interleaves the two over
--rounds rounds and quotes the median seconds per step (rank 0 prints). First, both run 3 steps from the same weights and the largest difference
between their parameters is printed: the two must train the same model.

- `small`: the small encoder's context encoder, 1 x 32 x 32, random-region masks, L2 (1.1M
  parameters), global batch 64.
- `paper`: the paper's inpainting model, `dcgan` encoder, 128 px, centre mask, L2 + adversarial
  (two optimizers; 2 x 32.8M parameters in the channel-wise layer), global batch 16.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

from ctxenc import distributed
from ctxenc.pretext import StepContext
from speed_pretrain import ctxenc_workload  # this folder is on the path of a script run from it

GLOBAL_BATCH = {"small": 64, "paper": 16}


class FlatAllReduce(StepContext):
    """The hand-written averaging ctxenc used before DDP: backward, then one flat all-reduce of every gradient."""

    def update(self, loss, optimizer="model", what="loss"):
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        self.scaler.step(opt)


def runner(name: str, context: type[StepContext]):
    """-> (model, step()) for workload `name`, its gradients averaged by `context`."""
    work = ctxenc_workload(name, GLOBAL_BATCH[name], torch.device("cpu"), context=context)
    return work.model, work.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default="small,paper", help="comma-separated: small, paper")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the median is quoted")
    parser.add_argument("--steps", type=int, default=5, help="steps per way per round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    distributed.init("cpu")
    if distributed.world_size() < 2:
        raise SystemExit("run under torchrun with 2 or more processes: torchrun --standalone --nproc_per_node=2 " + __file__)
    main_rank = distributed.is_main()
    if main_rank:
        print(f"torch {torch.__version__}, {distributed.world_size()} processes x {args.threads} threads, gloo, "
              f"median of {args.rounds} interleaved rounds of {args.steps} steps")
        print("| workload | global batch | DDP ms/step | flat all-reduce ms/step | DDP speed-up | max parameter difference |")
        print("|---|---|---|---|---|---|")
    for name in args.workloads.split(","):
        ways = {"ddp": runner(name, StepContext), "flat": runner(name, FlatAllReduce)}
        for _ in range(3):
            for _, step in ways.values():
                step()
        params = [dict(model.named_parameters()) for model, _ in ways.values()]
        diff = max((params[0][k] - params[1][k]).abs().max().item() for k in params[0])
        seconds = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way, (_, step) in ways.items():
                distributed.barrier()
                tic = time.perf_counter()
                for _ in range(args.steps):
                    step()
                distributed.barrier()
                seconds[way].append((time.perf_counter() - tic) / args.steps)
        if main_rank:
            ddp, flat = (statistics.median(seconds[w]) for w in ("ddp", "flat"))
            print(f"| {name} | {GLOBAL_BATCH[name]} | {ddp * 1000:.0f} | {flat * 1000:.0f} | x{flat / ddp:.2f} | {diff:.1e} |")
    distributed.close()


if __name__ == "__main__":
    main()
