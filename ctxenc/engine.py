"""Pretraining: one explicit, seeded training loop, read top to bottom.

`pretrain()` is the whole job behind `ctxenc pretrain`: load the data (uint8, in memory or
memory-mapped), build the encoder and pretext model from the seed, train, and write
`checkpoint.pt` and `log.jsonl`. Each batch is converted to the encoder's input (and augmented)
as it is drawn, on the training device, so a dataset is never held in float.

While training, `last.pt` holds everything needed to continue exactly (model, optimizers, step,
the epoch's data order, every RNG state, the unlogged loss sums); it is rewritten atomically
every `checkpoint_every` steps, so after a `kill -9` at any moment `--resume` continues and ends
with the same weights, bit for bit on CPU, as an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ctxenc import distributed
from ctxenc.checkpoint import load_checkpoint, save_checkpoint
from ctxenc.data import dataset_name, load_dataset, pretrain_split
from ctxenc.data.transforms import load_size_for, random_crop_flip, to_model_input
from ctxenc.device import grad_scaler, resolve_device
from ctxenc.encoders import create_encoder, default_input_size
from ctxenc.errors import UserError
from ctxenc.progress import progress_bar
from ctxenc.provenance import provenance
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
    augment: bool = False
    amp: bool = False

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UserError(f"training needs epochs >= 0, batch size >= 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}.")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise UserError("log_every and checkpoint_every must be at least 1 step.")
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
    device: where the model trains ('cpu', 'cuda', 'cuda:N'); checkpoints hold CPU tensors.
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
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        save_checkpoint(path, {**meta, "model": state, "pretrain_seconds": seconds, "pretrain_steps": steps,
                               "provenance": {**provenance(), "wall_seconds": round(time.perf_counter() - wall, 2)},
                               "done": True})
        (out_dir / "last.pt").unlink(missing_ok=True)
    distributed.barrier()
    return path


def dataset_mean(images: torch.Tensor, size: int, max_values: int = 2**28) -> torch.Tensor:
    """Per-channel mean (C,) of the model inputs. images: uint8 (N, C, H, W).

    Up to `max_values` input values (1 GiB of float) the mean is exact over all images;
    beyond, over evenly spaced images, so a memory-mapped dataset is not read whole.
    """
    per_image = images.shape[1] * size * size
    if len(images) * per_image > max_values:
        images = images[torch.linspace(0, len(images) - 1, max_values // per_image).long()]
    return to_model_input(images, size).mean(dim=(0, 2, 3))


def train_loop(model: Pretext, images: torch.Tensor, labels: torch.Tensor | None, cfg: TrainConfig, out_dir: Path,
               meta: dict, progress: bool = True, resume: bool = False,
               device: torch.device = torch.device("cpu")) -> tuple[float, int]:
    """images: uint8 (N, C, H, W), in memory or memory-mapped; labels: (N, ...) or None; `model`
    already on `device`. The pretext's `train_step` does the method's work; this loop does the
    data order, augmentation, logging, snapshots and resume, for every pretext alike.

    Returns (training seconds over resumes too, steps trained).
    """
    world = distributed.world_size()
    if cfg.batch_size % world:
        raise UserError(f"the global batch of {cfg.batch_size} does not split evenly over {world} processes.")
    gen = torch.Generator().manual_seed(cfg.seed)  # ... and the data order, masks and crops
    optimizers = model.optimizers(cfg)
    scaler = grad_scaler(device, cfg.amp)
    n, size = images.shape[0], model.encoder.input_size
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"{n} training images are fewer than one batch of {cfg.batch_size}; lower --batch-size.")
    total = cfg.total_steps(steps_per_epoch)

    step, order, sums, seconds_before = 0, None, {}, 0.0
    last = out_dir / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last)
        if any(state[k] != meta[k] for k in ("encoder", "pretext", "train", "data")):
            raise UserError(f"{last} belongs to a run with other settings; drop --resume or use another --out.")
        model.load_state_dict(state["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["rng_generator"])
        torch.set_rng_state(state["rng_torch"])
        step, order, sums, seconds_before = state["step"], state["order"], state["sums"], state["seconds"]
    log_path = out_dir / "log.jsonl"
    if distributed.is_main():
        truncate_log(log_path, step)
    ctx = StepContext(optimizers, device, cfg.amp, gen, cfg.batch_size, scaler, last)

    def snapshot() -> None:
        """Everything `--resume` needs to continue exactly where this step left off."""
        save_checkpoint(last, {
            **meta, "model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "scaler": scaler.state_dict(), "rng_generator": gen.get_state(), "rng_torch": torch.get_rng_state(),
            "step": step, "order": order, "sums": sums, "seconds": seconds_before + time.perf_counter() - tic, "done": False,
        })

    model.train()
    bar = progress_bar(total=total, initial=step, desc=f"pretrain {meta['pretext']['name']}", unit="step",
                       disable=not progress or not distributed.is_main())
    tic = time.perf_counter()
    start_step = step
    with bar:
        while step < total:
            i = step % steps_per_epoch
            if i == 0:
                order = torch.randperm(n, generator=gen)
            index = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            raw = images[index].to(device, non_blocking=True)
            # Crops and flips, like masks, are drawn for the global batch, then sliced.
            batch = {"images": (random_crop_flip(raw, size, gen) if cfg.augment else to_model_input(raw, size))[ctx.mine]}
            if model.needs_labels:
                batch["labels"] = labels[index][ctx.mine].to(device)
            ctx.step = step
            metrics = distributed.mean(model.train_step(batch, ctx))
            scaler.update()
            step += 1
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            bar.update()
            if step % cfg.log_every == 0 or step == total:
                window = (step - 1) % cfg.log_every + 1
                means = {k: v / window for k, v in sums.items()}
                session = time.perf_counter() - tic
                record = {"step": step, "epoch": (step - 1) // steps_per_epoch, **means,
                          "images_per_s": round((step - start_step) * cfg.batch_size / session, 1),
                          "seconds": round(seconds_before + session, 3)}
                if distributed.is_main():
                    with open(log_path, "a") as log:
                        log.write(json.dumps(record) + "\n")
                headline = next(iter(means))
                bar.set_postfix({headline: f"{means[headline]:.4f}"})
                sums = {}
            if distributed.is_main() and step < total and (step % cfg.checkpoint_every == 0 or step % steps_per_epoch == 0):
                snapshot()
    return seconds_before + time.perf_counter() - tic, total


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
