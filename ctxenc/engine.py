"""Pretraining: one explicit, seeded training loop, read top to bottom.

`pretrain()` is the whole job behind `ctxenc pretrain`: load the data (uint8, in memory or
memory-mapped), build the encoder and pretext model from the seed, train, and write
`checkpoint.pt` and `log.jsonl`. Each batch is converted to the encoder's input (and augmented)
as it is drawn, on the training device, so a dataset is never held in float.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ctxenc.checkpoint import save_checkpoint
from ctxenc.data import eval_splits, load_dataset
from ctxenc.data.transforms import load_size_for, random_crop_flip, to_model_input
from ctxenc.device import autocast, grad_scaler, resolve_device
from ctxenc.encoders import create_encoder, default_input_size
from ctxenc.errors import UserError
from ctxenc.losses import discriminator_loss, generator_loss
from ctxenc.masks import sample_masks
from ctxenc.pretext import PretextConfig, build_pretext


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation of a pretext model (paper code: Adam, beta1 0.5, G lr 2e-3, D lr 2e-4, batch 64).

    max_steps caps the run (for smoke tests and `--limit`); None trains `epochs` full epochs.
    augment: the paper's random crop + horizontal flip of each batch (`ctxenc.data.transforms`);
    off, every image is the centre view evaluation uses.
    amp: mixed precision (`ctxenc.device`): float16 + loss scaling on CUDA, bfloat16 on the CPU.
    """

    epochs: int = 1
    batch_size: int = 64
    lr: float = 2e-3
    beta1: float = 0.5
    seed: int = 0
    max_steps: int | None = None
    log_every: int = 50
    augment: bool = False
    amp: bool = False

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UserError(f"training needs epochs >= 0, batch size >= 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}.")


class TrainingDiverged(UserError):
    """The loss stopped being finite."""


def pretrain(dataset: str, encoder: dict, pretext: PretextConfig, train: TrainConfig, out_dir: str | Path,
             data_root=None, download: bool = False, limit: int | None = None, progress: bool = True,
             split: str | None = None, device: str = "cpu") -> Path:
    """Pretrain `pretext` on split `split` of `dataset` (default: its train split); returns the checkpoint's path.

    encoder: {"name": ..., **options}; channels come from the data, the input size from the
    options or the encoder's default (small 32, dcgan 128, alexnet 227, timm 224).
    limit: use only the first `limit` training images (quick end-to-end checks).
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    split = split or eval_splits(dataset)[0]
    size = encoder.get("input_size") or default_input_size(encoder["name"])
    data = load_dataset(dataset, split, data_root, download, limit=limit, load_size=load_size_for(size))
    images = data.images
    enc_options = {"in_channels": images.shape[1], **{k: v for k, v in encoder.items() if k != "name"}, "input_size": size}
    fill = dataset_mean(images, size)  # per channel, in [-1, 1]: fills hidden pixels

    torch.manual_seed(train.seed)  # the seed fixes the initial weights ...
    model = build_pretext(pretext, create_encoder(encoder["name"], **enc_options), fill)
    meta = {
        "encoder": model.encoder.config,
        "pretext": asdict(pretext),
        "train": asdict(train),
        "data": {"dataset": dataset, "split": split, "input_size": size, "fill": fill.tolist(), "train_images": len(images)},
    }
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    if pretext.name != "random":
        train_loop(model.to(dev), images, pretext, train, out_dir, meta, progress, dev)
    seconds = time.perf_counter() - start
    path = out_dir / "checkpoint.pt"
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {**meta, "model": state, "pretrain_seconds": seconds, "done": True})
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


def train_loop(model, images: torch.Tensor, pretext: PretextConfig, cfg: TrainConfig, out_dir: Path, meta: dict,
               progress: bool = True, device: torch.device = torch.device("cpu")) -> None:
    """images: uint8 (N, C, H, W), in memory or memory-mapped; `model` already on `device`.

    Writes `log.jsonl`; keeps the last good checkpoint.
    """
    gen = torch.Generator().manual_seed(cfg.seed)  # ... and the data order, masks and crops
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=cfg.lr, betas=(cfg.beta1, 0.999))
    disc = model.discriminator
    # The generator learns 10x faster than the discriminator (paper, Sec. 3.2).
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr / 10, betas=(cfg.beta1, 0.999)) if disc is not None else None
    scaler = grad_scaler(device, cfg.amp)
    n, size = images.shape[0], model.encoder.input_size
    steps_per_epoch = n // cfg.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"{n} training images are fewer than one batch of {cfg.batch_size}; lower --batch-size.")
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    model.train()
    log = open(out_dir / "log.jsonl", "w")
    bar = tqdm(total=total, desc=f"pretrain {pretext.name}", unit="step", disable=not progress, dynamic_ncols=True)
    sums: dict[str, float] = {}
    step, tic = 0, time.perf_counter()
    try:
        for epoch in range(math.ceil(total / steps_per_epoch)):
            order = torch.randperm(n, generator=gen)
            for i in range(steps_per_epoch):
                if step == total:
                    break
                raw = images[order[i * cfg.batch_size : (i + 1) * cfg.batch_size]].to(device, non_blocking=True)
                batch = random_crop_flip(raw, size, gen) if cfg.augment else to_model_input(raw, size)
                masks = (sample_masks(pretext.mask, len(batch), size, gen, **pretext.mask_options(size)).to(device)
                         if pretext.uses_masks else None)
                with autocast(device, cfg.amp):
                    out = model.forward_loss(batch, masks)
                metrics = {"loss_rec": out["loss_rec"]}
                loss = out["loss_rec"]
                if disc is not None:
                    # Discriminator step on real vs predicted content (generator frozen).
                    with autocast(device, cfg.amp):
                        loss_d = discriminator_loss(disc(out["real_view"]), disc(out["fake_view"].detach()))
                    check_finite(loss_d, "discriminator loss", step, out_dir)
                    opt_d.zero_grad(set_to_none=True)
                    scaler.scale(loss_d).backward()
                    scaler.step(opt_d)
                    with autocast(device, cfg.amp):
                        loss_adv = generator_loss(disc(out["fake_view"]))
                    loss = pretext.lambda_rec * out["loss_rec"] + pretext.lambda_adv * loss_adv
                    metrics.update(loss_d=loss_d, loss_adv=loss_adv)
                check_finite(loss, "loss", step, out_dir)
                opt_g.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt_g)
                scaler.update()
                step += 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v.item()
                bar.update()
                if step % cfg.log_every == 0 or step == total:
                    means = {k: v / ((step - 1) % cfg.log_every + 1) for k, v in sums.items()}
                    elapsed = time.perf_counter() - tic
                    record = {"step": step, "epoch": epoch, **means, "images_per_s": step * cfg.batch_size / elapsed, "seconds": elapsed}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    bar.set_postfix(loss=f"{means['loss_rec']:.4f}")
                    sums = {}
            if step < total:  # after the last epoch the final checkpoint follows at once
                save_checkpoint(out_dir / "last.pt", {**meta, "model": model.state_dict(), "step": step, "epoch": epoch, "done": False})
    finally:
        bar.close()
        log.close()
    (out_dir / "last.pt").unlink(missing_ok=True)


def check_finite(loss: torch.Tensor, what: str, step: int, out_dir: Path) -> None:
    """Stop before a non-finite loss reaches the weights (the discriminator's is checked before its step too)."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"the {what} became {loss.item()} at step {step}; training stopped (lower --lr); "
            f"the last good checkpoint, if any, is kept in {out_dir}."
        )
