"""Peak memory of evaluation by split size: does it follow the batch and the features, or the pixels?

    python benchmarks/eval_memory.py [--images 2500 5000] [--px 227] [--max-iter 10]

For each count N, a generated image folder with N JPEGs of `--px` px in each of train/ and test/
(smooth colour fields, 10 classes, under /tmp/ctxenc-eval-memory, made once and reused) is
evaluated with `ctxenc evaluate --protocol linear_probe` (one weight decay, `--max-iter` L-BFGS
iterations) on an AlexNet checkpoint from `ctxenc pretrain --steps 1`, single-threaded, twice in
a temporary CTXENC_CACHE: the first run decodes the images into the cache, the second reads
them from it. Printed: the second run's peak RSS (/usr/bin/time %M) and wall seconds, and the
RSS per image between the counts, extrapolated (a straight line, not a measurement) to a split
of 50,000 images. The two largest counts should be far enough apart that the slope is not noise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path("/tmp/ctxenc-eval-memory")


def split_folders(count: int, px: int) -> Path:
    """train/ and test/ of `count` generated px x px JPEGs each, in 10 class folders (made once)."""
    folder = IMAGES / f"{count}x{px}"
    if (folder / "done").exists():
        return folder
    for seed, split in enumerate(("train", "test")):
        rng = np.random.default_rng(seed)
        for i in range(count):
            field = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # a smooth colour field
            path = folder / split / f"class{i % 10}" / f"{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(field).resize((px, px), Image.BICUBIC).save(path, quality=90)
    (folder / "done").touch()
    return folder


def ctxenc(args: list[str], env: dict) -> tuple[float, float]:
    """(peak RSS in GB, wall seconds) of one `ctxenc` command."""
    tic = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "ctxenc", *args, "--no-progress"],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return int(done.stderr.strip().splitlines()[-1]) / 1e6, time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2500, 5000], help="images per split")
    parser.add_argument("--px", type=int, default=227)
    parser.add_argument("--max-iter", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "CTXENC_CACHE": f"{work}/cache", "PYTHONPATH": str(ROOT),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        protocol = Path(work, "linear_probe.yaml")
        protocol.write_text(f"protocol: linear_probe\nweight_decays: [1.0e-4]\nmax_iter: {args.max_iter}\n")
        first = split_folders(min(args.images), args.px)
        ctxenc(["pretrain", "--pretext", "context_encoder", "--encoder", "alexnet", "--steps", "1", "--batch-size", "8",
                "--dataset", "imagefolder", "--data-root", str(first), "--limit", "16", "--out", f"{work}/ckpt"], env)
        print(f"{'images/split':>12} {'peak RSS GB':>11} {'wall s':>7}")
        rows = []
        for count in args.images:
            evaluate = ["evaluate", "--checkpoint", f"{work}/ckpt", "--protocol", str(protocol), "--dataset", "imagefolder",
                        "--data-root", str(split_folders(count, args.px)), "--out", f"{work}/eval{count}"]
            ctxenc(evaluate, env)  # decodes the splits into the cache
            rss, wall = ctxenc(evaluate, env)
            rows.append((count, rss))
            print(f"{count:>12} {rss:>11.2f} {wall:>7.1f}")
    if len(rows) > 1:
        (n0, rss0), (n1, rss1) = rows[-2], rows[-1]
        per_image = (rss1 - rss0) / (n1 - n0)
        print(f"\n{per_image * 1e6:.1f} KB more per image in each split; a straight line through the last two "
              f"counts reaches {rss1 + per_image * (50_000 - n1):.2f} GB at 50,000 images per split (extrapolated)")


if __name__ == "__main__":
    main()
