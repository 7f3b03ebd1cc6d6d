"""Images per second of the pretraining input path, beside torchvision's ImageFolder + DataLoader.

    python benchmarks/input_pipeline.py [--images 2000] [--batch 64] [--batches 8] [--sizes 128 227]
                                        [--workers 0 1 2] [--scale 10000 50000 100000] [--device cuda]

The input path is everything between the files and a step: rows read from the decoded uint8
cache (memory-mapped), random crop and flip, `random_region` masks (`ctxenc.masks.sample_masks`),
onto the device. ctxenc runs the engine's own pieces (`RowReader`, `local_batch`, the context
encoder's `draw_on_device`) with 0 workers (inline), 1 (`RowReader`'s thread, what the engine
uses) and, to measure the alternative, DataLoader worker processes reading the same rows; and
streamed (`cache: false`: `StreamedImages` decoding the JPEGs per batch in N worker processes,
read by the engine's thread). The
baseline is what a user would otherwise write: torchvision's `ImageFolder` + `DataLoader`
decoding the JPEGs with the same transforms (shorter side to the load size, RandomCrop,
RandomHorizontalFlip, ToTensor, Normalize) and as many workers, masks drawn alike per batch.

Images: `--images` generated 256-px JPEGs (smooth colour fields, 10 class folders) under
/tmp/ctxenc-input-bench, made once and reused; ctxenc reads them through its `imagefolder` dataset
into a decoded cache in a temporary CTXENC_CACHE, built at the start (its images/s is printed).
The main process runs one thread (torch.set_num_threads(1)); each figure is `--batch` x
`--batches` images over the wall seconds they took after one warm-up batch.

`--scale N ...` adds, for generated 96-px folders of N images, `ctxenc pretrain` (small encoder,
3 steps) run twice on a fresh cache: the cache build's images/s, the seconds before the first
step on the first and the second run (process wall time less the training time), peak RSS
(/usr/bin/time) and the cache's disk use. 10 k takes about two minutes here; 50 k and 100 k far longer.
`--sizes` with no value skips the input-path table: `--sizes --scale 10000 50000 100000`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IMAGES = Path("/tmp/ctxenc-input-bench")
MASK = "random_region"


def image_folder(count: int, px: int) -> Path:
    """`count` generated px x px JPEGs in 10 class folders (made once, then reused)."""
    folder = IMAGES / f"{count}x{px}"
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        field = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)  # a smooth colour field, like a photo's low frequencies
        img = Image.fromarray(field).resize((px, px), Image.BICUBIC)
        path = folder / f"class{i % 10}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90)
    (folder / "done").touch()
    return folder


def per_second(batches, step, count: int, batch: int, device: torch.device) -> float:
    """Images/s of `step(batch)` over `count` batches of the iterator `batches`, after one warm-up."""
    step(next(batches))
    tic = time.perf_counter()
    for _ in range(count):
        step(next(batches))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return count * batch / (time.perf_counter() - tic)


def ctxenc_rates(images: torch.Tensor, streamed_images, size: int, args, device: torch.device) -> dict[str, float]:
    """{way: images/s} of the engine's input path over the cached uint8 `images` (N, 3, S, S), and
    over the same images decoded per batch (`streamed_images`, a `StreamedImages`)."""
    from ctxenc.data.streaming import StreamedImages
    from ctxenc.device import grad_scaler
    from ctxenc.engine import RowReader, local_batch
    from ctxenc.masks import sample_masks
    from ctxenc.pretext import StepContext

    gen = torch.Generator().manual_seed(0)
    device_gen = torch.Generator(device).manual_seed(0) if device.type == "cuda" else None
    ctx = StepContext({}, device, False, gen, args.batch, grad_scaler(device, False), Path("last.pt"), device_gen)
    steps = args.batches + 1
    order = torch.randperm(len(images), generator=gen)[: steps * args.batch].view(steps, args.batch)

    def step(rows: dict[str, torch.Tensor]) -> None:
        batch = local_batch(rows, size, True, ctx)
        masks = ctx.draw_on_device(lambda n, g, **where: sample_masks(MASK, n, size, g, **where))
        batch["images"].masked_fill_(masks, 0.0)  # the masks used, as a step would

    rates = {}
    # Streamed first: run after the `Rows` DataLoaders below, closing its workers failed once (a worker
    # exited with code 1, cause not found).
    for workers in [w for w in args.workers if w > 0]:
        # Streamed (`cache: false`): the engine's thread waits on `StreamedImages`' workers decoding the files.
        streamed = StreamedImages(streamed_images.paths, streamed_images.size, streamed_images.decode, workers)
        with RowReader(streamed, None, device) as reader:
            ahead = (reader.read(order[k], order[k + 1] if k + 1 < steps else None) for k in range(steps))
            rates[f"ctxenc, streamed, {workers} worker{'s' * (workers > 1)}"] = per_second(ahead, step, args.batches, args.batch, device)
        streamed.close()
    for workers in args.workers:
        if workers <= 1:  # 0: read in the loop; 1: the engine's thread, one step ahead
            with RowReader(images, None, device) as reader:
                ahead = (reader.read(order[k], order[k + 1] if workers and k + 1 < steps else None) for k in range(steps))
                rates[f"ctxenc, {'inline' if workers == 0 else '1 thread'}"] = per_second(ahead, step, args.batches, args.batch, device)
        if workers >= 1:  # worker processes read the same rows (the engine's alternative to its thread)
            loader = torch.utils.data.DataLoader(Rows(images, order), batch_size=None, num_workers=workers,
                                                 pin_memory=device.type == "cuda")
            rates[f"ctxenc, DataLoader {workers} worker{'s' * (workers > 1)}"] = \
                per_second(iter(loader), step, args.batches, args.batch, device)
    return rates


class Rows(torch.utils.data.Dataset):
    """Batch k: the rows order[k] of `images`, read in a DataLoader worker."""

    def __init__(self, images: torch.Tensor, order: torch.Tensor):
        self.images, self.order = images, order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return {"images": torch.index_select(self.images, 0, self.order[k])}


def torchvision_rates(folder: Path, size: int, args, device: torch.device) -> dict[str, float]:
    """{way: images/s} of ImageFolder + DataLoader decoding the JPEGs, with the same augmentation and masks."""
    from torchvision import datasets, transforms

    from ctxenc.data.transforms import load_size_for
    from ctxenc.masks import sample_masks

    augment = transforms.Compose([transforms.Resize(load_size_for(size)), transforms.RandomCrop(size),
                                  transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                  transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    data = datasets.ImageFolder(str(folder), transform=augment)
    gen = torch.Generator(device).manual_seed(0)

    def step(batch) -> None:
        images = batch[0].to(device, non_blocking=True)
        images.masked_fill_(sample_masks(MASK, len(images), size, gen, device=device), 0.0)

    rates = {}
    for workers in args.workers:
        loader = torch.utils.data.DataLoader(data, args.batch, shuffle=True, num_workers=workers, drop_last=True,
                                             pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
        rates[f"torchvision, {workers} worker{'s' * (workers != 1)}"] = per_second(iter(loader), step, args.batches, args.batch, device)
    return rates


def input_path(args, device: torch.device) -> None:
    from ctxenc.data import load_dataset
    from ctxenc.data.transforms import load_size_for

    folder = image_folder(args.images, 256)
    print(f"{args.images} JPEGs of 256 px in {folder}; batches of {args.batch}, {args.batches} timed; "
          f"main process on 1 thread; device {device}\n")
    rows = []
    for size in args.sizes:
        tic = time.perf_counter()
        images = load_dataset("imagefolder", "train", folder, load_size=load_size_for(size)).images
        build = len(images) / (time.perf_counter() - tic)
        print(f"{size} px: decoded cache (load size {load_size_for(size)}) built at {build:.0f} images/s")
        streamed = load_dataset({"name": "imagefolder", "cache": False}, "train", folder, load_size=load_size_for(size)).images
        rates = {**ctxenc_rates(images, streamed, size, args, device), **torchvision_rates(folder, size, args, device)}
        rows += [(size, way, rate) for way, rate in rates.items()]
    print(f"\n{'size':>5}  {'input path':<30} {'images/s':>9}")
    for size, way, rate in rows:
        print(f"{size:>5}  {way:<30} {rate:>9.0f}")


def scale(args) -> None:
    """Pretraining on generated folders of each size, twice on a fresh cache: first (decoding) and second run."""
    print(f"\n{'images':>7} {'build img/s':>11} {'1st: s to step':>14} {'2nd: s to step':>14} "
          f"{'1st RSS GB':>10} {'2nd RSS GB':>10} {'cache MB':>9}")
    for count in args.scale:
        folder = image_folder(count, 96)
        with tempfile.TemporaryDirectory() as work:
            env = {**os.environ, "CTXENC_CACHE": f"{work}/cache", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
            runs = []
            for run in ("first", "second"):
                out = Path(work) / run
                tic = time.perf_counter()
                done = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "ctxenc", "pretrain",
                                       "--pretext", "context_encoder", "--dataset", "imagefolder", "--data-root", str(folder),
                                       "--max-steps", "3", "--batch-size", "64", "--out", str(out), "--no-progress"],
                                      env=env, capture_output=True, text=True)
                wall = time.perf_counter() - tic
                if done.returncode:
                    raise SystemExit(done.stderr)
                trained = json.loads((out / "log.jsonl").read_text().splitlines()[-1])["seconds"]
                runs.append((wall - trained, int(done.stderr.strip().splitlines()[-1]) / 1e6))
            disk = sum(f.stat().st_size for f in Path(work, "cache").rglob("*") if f.is_file()) / 1e6
        build = count / max(runs[0][0] - runs[1][0], 1e-9)
        print(f"{count:>7} {build:>11.0f} {runs[0][0]:>14.2f} {runs[1][0]:>14.2f} {runs[0][1]:>10.2f} {runs[1][1]:>10.2f} {disk:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="*", default=[128, 227], help="crop sizes of the input-path table; none skips it")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="image counts of the scale table, e.g. 10000 50000 100000")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["CTXENC_CACHE"] = cache
        if args.sizes:
            input_path(args, torch.device(args.device))
    if args.scale:
        scale(args)


if __name__ == "__main__":
    main()
