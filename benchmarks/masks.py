"""Masks per second per core: `ctxenc.masks.sample_masks` beside the samplers it replaced.

    python benchmarks/masks.py [--batch 64] [--calls 5] [--old f876876] [--device cuda]

One thread (torch.set_num_threads(1)), batches of `--batch` on the CPU; each figure is `--batch`
over the median CPU seconds of `--calls` calls (CPU time of this process: robust on a machine
shared with other jobs; with one thread it matches wall time on an idle one). With `--device
cuda` the masks are drawn on the GPU with a CUDA generator and timed in wall seconds after a
synchronize (the old samplers ran on the CPU only, so they are timed there, per core). The old samplers
are read with `git show OLD:ctxenc/masks/shapes.py` (default f876876, the last commit before
issue 21, where random_region sorted every mask's field); without git they are left out.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import types
from pathlib import Path

import torch

from ctxenc.masks import shapes

CASES = [("random_region", 128), ("random_region", 227), ("random_block", 227), ("center", 128), ("center", 228)]


def old_samplers(rev: str) -> types.ModuleType | None:
    """The masks module at git revision `rev`, or None where git cannot show it."""
    try:
        source = subprocess.run(["git", "show", f"{rev}:ctxenc/masks/shapes.py"], capture_output=True, text=True,
                                check=True, cwd=Path(__file__).resolve().parent).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType(f"shapes_{rev}")
    exec(compile(source, f"{rev}:ctxenc/masks/shapes.py", "exec"), module.__dict__)
    return module


def masks_per_second(sample, kind: str, size: int, batch: int, calls: int, device: str = "cpu") -> float:
    gen = torch.Generator(device).manual_seed(0)
    cuda = device.startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time
    sample(kind, batch, size, gen)  # warm-up
    seconds = []
    for _ in range(calls):
        tic = clock()
        sample(kind, batch, size, gen)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(clock() - tic)
    return batch / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--old", default="f876876", help="git revision of the samplers to compare with")
    parser.add_argument("--device", default="cpu", help="where the new samplers draw: cpu (default) or cuda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    old = old_samplers(args.old)
    if old is None:
        print(f"(git cannot show {args.old}:ctxenc/masks/shapes.py; old samplers left out)")
    where = "per core" if args.device == "cpu" else f"on {args.device} (old: per CPU core)"
    print(f"masks/s {where}, batches of {args.batch}, median of {args.calls} calls")
    print(f"{'mask':<14} {'px':>4} {'new':>9} {'old':>9} {'speed-up':>9}")
    for kind, size in CASES:
        new = masks_per_second(shapes.sample_masks, kind, size, args.batch, args.calls, args.device)
        line = f"{kind:<14} {size:>4} {new:>9.0f}"
        if old is not None:
            before = masks_per_second(old.sample_masks, kind, size, args.batch, args.calls)
            line += f" {before:>9.0f} {new / before:>8.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
