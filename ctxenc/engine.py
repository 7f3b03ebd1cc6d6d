"""Pretraining: one explicit, seeded training loop, read top to bottom.

`pretrain()` is the whole job behind `ctxenc pretrain`: load the data (uint8, in memory or
memory-mapped), build the encoder and pretext model from the seed, train, and write
`checkpoint.pt` and `log.jsonl`. Each process reads its slice of each global batch one step
ahead, in a background thread (`RowReader`), copies it to the training device and converts (and
augments) it there, so a dataset is never held in float.

Everything a step computes stays on the device: the loop reads values on the host once per log
line (`host_values`: the loss sums and the non-finite check), so a GPU is never left waiting for
the host between steps.

While training, `last.pt` holds everything needed to continue exactly (model, optimizers, step,
the epoch's data order, every RNG state, the unlogged loss sums), as CPU tensors; it is rewritten
atomically every `checkpoint_every` steps, or with `snapshot_minutes`
at the first log line that many minutes after the last, so after a `kill -9` at any moment
`--resume` continues and ends with the same weights, bit for bit on CPU, as an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ctxenc import distributed
from ctxenc.checkpoint import load_checkpoint, save_checkpoint
from ctxenc.data import dataset_name, load_dataset, pretrain_split
from ctxenc.data.cache import read_rows
from ctxenc.data.streaming import StreamedImages
from ctxenc.data.transforms import crop_flip, crop_flip_draws, load_size_for, to_model_input
from ctxenc.device import grad_scaler, resolve_device
from ctxenc.encoders import create_encoder, default_input_size
from ctxenc.errors import UserError
from ctxenc.progress import progress_bar
from ctxenc.provenance import device_fields, provenance
from ctxenc.pretext import Pretext, PretextSpec, PretrainData, StepContext, TrainingDiverged, build_pretext

__all__ = ["TrainConfig", "TrainingDiverged", "pretrain", "train_loop"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of a pretext model (paper code: Adam, beta1 0.5, G lr 2e-3, D lr 2e-4, batch 64).

    steps: the training budget in steps (epochs are then ignored): the same budget for every
    pretext, whatever its data. Otherwise `epochs` passes over the data. batch_size is the global
    batch (split over processes under torchrun); max_steps caps the run (smoke tests,
    `--limit`); checkpoint_every: steps between resumable `last.pt` snapshots.
    augment: the paper's random crop + horizontal flip of each batch (`ctxenc.data.transforms`);
    off, every image is the centre view evaluation uses.
    amp: mixed precision (`ctxenc.device`): float16 + loss scaling on CUDA, bfloat16 on the CPU.
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 64
    lr: float = 2e-3
    beta1: float = 0.5
    seed: int = 0
    max_steps: int | None = None
    log_every: int = 50
    checkpoint_every: int = 100
    snapshot_minutes: float | None = None
    augment: bool = False
    amp: bool = False

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UserError(f"training needs epochs >= 0, batch size >= 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}.")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise UserError("log_every and checkpoint_every must be at least 1 step.")
        if self.snapshot_minutes is not None and not self.snapshot_minutes >= 0:
            raise UserError(f"snapshot_minutes must be at least 0, got {self.snapshot_minutes}.")
        if (self.steps is not None and self.steps < 0) or (self.max_steps is not None and self.max_steps < 0):
            raise UserError(f"steps and max_steps must be at least 0, got {self.steps} and {self.max_steps}.")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The steps a run takes: `steps`, else `epochs` passes, capped by `max_steps`."""
        total = self.steps if self.steps is not None else self.epochs * steps_per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)


def pretrain(dataset, encoder: dict, pretext: PretextSpec, train: TrainConfig, out_dir: str | Path,
             data_root=None, download: bool = False, limit: int | None = None, progress: bool = True,
             resume: bool = False, split: str | None = None, device: str = "cpu") -> Path:
    """Pretrain `pretext` on split `split` of `dataset` (default: its pretraining split); returns the checkpoint's path.

    encoder: {"name": ..., **options}; channels come from the data, the input size from the
    options or the encoder's default (small 32, dcgan 128, alexnet 227, timm 224).
    limit: use only the first `limit` training images (quick end-to-end checks).
    resume: continue from `out_dir/last.pt` if it exists (and do nothing if the run is complete).
    device: where the model trains ('cpu', 'cuda', 'cuda:N'); checkpoints hold CPU tensors. Under
    torchrun, `distributed.init(device)` has joined the process group before.
    """
    out_dir = Path(out_dir)
    path = out_dir / "checkpoint.pt"
    if resume and path.exists() and load_checkpoint(path).get("done"):
        return path
    wall = time.perf_counter()
    dev = resolve_device(device)
    split = split or pretrain_split(dataset)
    size = encoder.get("input_size") or default_input_size(encoder["name"])
    data = load_dataset(dataset, split, data_root, download, limit=limit, load_size=load_size_for(size))
    images = data.images
    if pretext.method.needs_labels and data.labels is None:
        raise UserError(f"pretext {pretext.name!r} trains on labels, but split {split!r} of {dataset_name(dataset)} has none; "
                        "pretrain on a labelled split.")
    enc_options = {"in_channels": images.shape[1], **{k: v for k, v in encoder.items() if k != "name"}, "input_size": size}
    fill = dataset_mean(images, size)  # per channel, in [-1, 1]: fills hidden pixels
    info = PretrainData(fill=fill, num_classes=data.num_classes if data.labels is not None else None,
                        task=data.task if data.labels is not None else None)

    torch.manual_seed(train.seed)  # the seed fixes the initial weights ...
    model = build_pretext(pretext, create_encoder(encoder["name"], **enc_options), info)
    meta = {
        "encoder": model.encoder.config,
        "pretext": pretext.as_dict(),
        "train": asdict(train),
        "data": {"dataset": dataset if isinstance(dataset, str) else dict(dataset), "split": split,
                 "input_size": size, "fill": fill.tolist(), "train_images": len(images),
                 "num_classes": info.num_classes, "task": info.task},
    }
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    seconds, steps = 0.0, 0
    if model.trains:
        seconds, steps = train_loop(model.to(dev), images, data.labels, train, out_dir, meta, progress, resume, dev)
    if distributed.is_main():
        save_checkpoint(path, {**meta, "model": model.state_dict(), "pretrain_seconds": seconds, "pretrain_steps": steps,
                               "provenance": {**provenance(), **device_fields(dev, train.amp),
                                              "wall_seconds": round(time.perf_counter() - wall, 2)},
                               "done": True})
        (out_dir / "last.pt").unlink(missing_ok=True)
    distributed.barrier()
    return path


def dataset_mean(images: torch.Tensor, size: int, max_values: int = 2**28, chunk: int = 512) -> torch.Tensor:
    """Per-channel mean (C,) of the model inputs. images: uint8 (N, C, H, W).

    Up to `max_values` input values the mean is exact over all images; beyond, over evenly
    spaced images, so a memory-mapped dataset is not read whole. Summed in float64, `chunk`
    images at a time, so memory follows the chunk, not the dataset.
    """
    per_image = images.shape[1] * size * size
    rows = torch.arange(len(images))
    if len(images) * per_image > max_values:
        rows = torch.linspace(0, len(images) - 1, max_values // per_image).long()
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        pixels = images[part] if isinstance(images, StreamedImages) else read_rows(images, part)
        total += to_model_input(pixels, size).sum(dim=(0, 2, 3), dtype=torch.float64)
    return (total / (len(rows) * size * size)).float()


def train_loop(model: Pretext, images: torch.Tensor, labels: torch.Tensor | None, cfg: TrainConfig, out_dir: Path,
               meta: dict, progress: bool = True, resume: bool = False,
               device: torch.device = torch.device("cpu")) -> tuple[float, int]:
    """images: uint8 (N, C, H, W), in memory, memory-mapped or streamed; labels: (N, ...) or None; `model`
    already on `device`. The pretext's `train_step` does the method's work; this loop does the
    data order, augmentation, logging, snapshots and resume, for every pretext alike.

    Returns (training seconds over resumes too, steps trained).
    """
    world = distributed.world_size()
    if cfg.batch_size % world:
        raise UserError(f"the global batch of {cfg.batch_size} does not split evenly over {world} processes.")
    gen = torch.Generator().manual_seed(cfg.seed)  # ... and the data order, crops and (on the CPU) masks
    # On a GPU the masks are drawn there, from a generator of its own (`StepContext.draw_on_device`).
    device_gen = torch.Generator(device).manual_seed(cfg.seed) if device.type == "cuda" else None
    optimizers = model.optimizers(cfg)
    scaler = grad_scaler(device, cfg.amp)
    n, size = images.shape[0], model.encoder.input_size
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"{n} training images are fewer than one batch of {cfg.batch_size}; lower --batch-size.")
    total = cfg.total_steps(steps_per_epoch)

    # sums: the loss sums since the last log line, float64 on the device, (metrics,) in `keys` order.
    step, order, keys, sums, seconds_before = 0, None, [], None, 0.0
    last = out_dir / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last)  # CPU tensors, copied onto the model's and optimizers' device below
        if any(state[k] != meta[k] for k in ("encoder", "pretext", "train", "data")):
            raise UserError(f"{last} belongs to a run with other settings; drop --resume or use another --out.")
        model.load_state_dict(state["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["rng_generator"])
        torch.set_rng_state(state["rng_torch"])
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        if device_gen is not None and "rng_device_generator" in state:
            device_gen.set_state(state["rng_device_generator"])
        step, order, seconds_before = state["step"], state["order"], state["seconds"]
        keys = list(state["sums"])
        sums = torch.tensor(list(state["sums"].values()), dtype=torch.float64, device=device) if keys else None
    log_path = out_dir / "log.jsonl"
    if distributed.is_main():
        truncate_log(log_path, step)
    ctx = StepContext(optimizers, device, cfg.amp, gen, cfg.batch_size, scaler, last, device_gen)

    def snapshot(host_sums: list[float]) -> None:
        """Everything `--resume` needs to continue exactly where this step left off."""
        save_checkpoint(last, {
            **meta, "model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "scaler": scaler.state_dict(), "rng_generator": gen.get_state(), "rng_torch": torch.get_rng_state(),
            **({"rng_cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
            **({"rng_device_generator": device_gen.get_state()} if device_gen is not None else {}),
            "step": step, "order": order, "sums": dict(zip(keys, host_sums)),
            "seconds": seconds_before + time.perf_counter() - tic, "done": False,
        })

    model.train()
    bar = progress_bar(total=total, initial=step, desc=f"pretrain {meta['pretext']['name']} seed {cfg.seed}", unit="step",
                       disable=not progress or not distributed.is_main())
    tic = last_snapshot = time.perf_counter()
    start_step = step
    with bar, RowReader(images, labels if model.needs_labels else None, device) as reader:
        while step < total:
            i = step % steps_per_epoch
            if i == 0:
                order = torch.randperm(n, generator=gen)
            ctx.step = step
            # The thread reads the next step's rows while this one trains (within the epoch: the
            # next epoch's order is drawn at its first step, after this step's masks).
            following = order[(i + 1) * cfg.batch_size : (i + 2) * cfg.batch_size][ctx.mine] \
                if i + 1 < steps_per_epoch and step + 1 < total else None
            rows = reader.read(order[i * cfg.batch_size : (i + 1) * cfg.batch_size][ctx.mine], following)
            batch = local_batch(rows, size, cfg.augment, ctx)
            metrics = model.train_step(batch, ctx)
            scaler.update()
            step += 1
            bar.update()
            keys = keys or list(metrics)
            values = torch.stack([metrics[k].detach().double() for k in keys])
            sums = values if sums is None else sums + values

            log_now = step % cfg.log_every == 0 or step == total
            # With snapshot_minutes, snapshots are decided at log lines instead, by rank 0's clock.
            snapshot_now = cfg.snapshot_minutes is None and step < total and step % cfg.checkpoint_every == 0
            if not (log_now or snapshot_now):
                continue
            # The host read: the loss sums averaged over processes, whether rank 0 wants a snapshot
            # by its clock, and the non-finite check, in one copy.
            due = cfg.snapshot_minutes is not None and distributed.is_main() and \
                time.perf_counter() - last_snapshot >= 60 * cfg.snapshot_minutes
            shared = distributed.total(torch.cat([sums, torch.tensor([float(due)], dtype=torch.float64, device=device)]))
            host = host_values(torch.cat([shared, ctx.health()]))
            ctx.check(host[-3:])
            host_sums = [v / world for v in host[: len(keys)]]
            snapshot_now = snapshot_now or (step < total and host[len(keys)] > 0)
            if log_now:
                window = (step - 1) % cfg.log_every + 1
                means = {k: v / window for k, v in zip(keys, host_sums)}
                session = time.perf_counter() - tic
                record = {"step": step, "epoch": (step - 1) // steps_per_epoch, **means,
                          "images_per_s": round((step - start_step) * cfg.batch_size / session, 1),
                          "seconds": round(seconds_before + session, 3)}
                if distributed.is_main():
                    with open(log_path, "a") as log:
                        log.write(json.dumps(record) + "\n")
                headline = keys[0]
                bar.set_postfix({headline: f"{means[headline]:.4f}"})
                sums, host_sums = None, []
            else:  # every process goes on from the same averaged sums, as a resumed run would
                sums = torch.tensor(host_sums, dtype=torch.float64, device=device)
            if snapshot_now:
                if distributed.is_main():
                    snapshot(host_sums)
                last_snapshot = time.perf_counter()
    return seconds_before + time.perf_counter() - tic, total


def host_values(values: torch.Tensor) -> list[float]:
    """values (K,) on the training device -> a list on the host: the loop's one host read per log
    line, where a GPU catches up with the steps queued before it."""
    return values.tolist()


class RowReader:
    """This process's rows of each global batch, read one step ahead in a background thread.

    Rows of a memory-mapped dataset larger than memory (ImageNet's decoded cache) are read from its
    file (`read_rows`), so the process's memory follows the batch, not the dataset; on CUDA they
    are written to pinned memory, from which the copy onto the GPU does not wait. The thread
    does only that: every random draw stays in the loop, in its order, so a run and its resumes
    are what they were without it. A thread, not DataLoader workers: the data is one uint8
    tensor, pread and `index_select` release the GIL, and nothing crosses a process
    (`benchmarks/input_pipeline.py` measures both). Streamed images (`StreamedImages`: an image
    folder decoded per batch) are decoded by their DataLoader workers, which the thread waits on.
    Use as a context manager: leaving it (an exception, Ctrl-C) cancels what was asked ahead and
    joins the thread.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, device: torch.device):
        self.data = {"images": images, **({"labels": labels} if labels is not None else {})}
        self.pin = device.type == "cuda"
        # Pinning from a thread uses its current device: make it the training one, not cuda:0.
        self.pool = ThreadPoolExecutor(1, "ctxenc-rows", initializer=torch.cuda.set_device if self.pin else None,
                                       initargs=(device,) if self.pin else ())
        self.ahead = None  # (rows, future) asked for by the previous `read`

    def read(self, rows: torch.Tensor, following: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """rows (b,) int64 -> {"images": uint8 (b, C, H, W), "labels": (b, ...)} on the CPU (pinned
        on CUDA): read ahead if the previous call named them as `following`; then `following`
        (the next step's rows, or None) is asked for."""
        if self.ahead is not None and torch.equal(self.ahead[0], rows):
            future = self.ahead[1]
        else:
            future = self.pool.submit(self._gather, rows)
        self.ahead = (following, self.pool.submit(self._gather, following)) if following is not None else None
        return future.result()

    def _gather(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {name: torch.empty((len(rows), *data.shape[1:]), dtype=data.dtype, pin_memory=self.pin)
               for name, data in self.data.items()}
        for name, data in self.data.items():
            if isinstance(data, StreamedImages):  # decoded now, in its worker processes
                data.read(rows, out=out[name])
            else:  # a memory-mapped dataset's rows read from its file, whose pages then do not stay resident
                read_rows(data, rows, out=out[name])
        return out

    def __enter__(self) -> RowReader:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def local_batch(rows: dict[str, torch.Tensor], size: int, augment: bool, ctx: StepContext) -> dict[str, torch.Tensor]:
    """rows: this process's slice of the global batch, from `RowReader.read` -> the same on the
    training device: images (B/world, C, size, size) in [-1, 1], and labels when read.

    Crops and flips, like masks, are drawn for the global batch on every process and then sliced,
    so they equal one process's.
    """
    raw = ctx.to_device(rows["images"])
    if augment:
        draws = crop_flip_draws(ctx.global_batch, raw.shape[-2:], size, ctx.generator)
        x = crop_flip(raw, ctx.to_device(draws[ctx.mine]), size)
    else:
        x = to_model_input(raw, size)
    batch = {"images": x}
    if "labels" in rows:
        batch["labels"] = ctx.to_device(rows["labels"])
    return batch


def truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to `step`: a killed run may have logged past its last snapshot,
    or left a torn last line."""
    kept = []
    for line in path.read_text().splitlines() if step and path.exists() else []:
        try:
            if json.loads(line)["step"] > step:
                break
        except (json.JSONDecodeError, KeyError):
            break
        kept.append(line)
    path.write_text("".join(line + "\n" for line in kept))
