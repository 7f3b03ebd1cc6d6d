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
from tqdm import tqdm

from ctxenc import distributed
from ctxenc.checkpoint import load_checkpoint, save_checkpoint
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

    batch_size is the global batch (split over processes under torchrun); max_steps caps the run
    (smoke tests, `--limit`); checkpoint_every: steps between resumable `last.pt` snapshots.
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
    checkpoint_every: int = 100
    augment: bool = False
    amp: bool = False

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise UserError(f"training needs epochs >= 0, batch size >= 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}.")
        if self.log_every < 1 or self.checkpoint_every < 1:
            raise UserError("log_every and checkpoint_every must be at least 1 step.")


class TrainingDiverged(UserError):
    """The loss stopped being finite."""


def pretrain(dataset, encoder: dict, pretext: PretextConfig, train: TrainConfig, out_dir: str | Path,
             data_root=None, download: bool = False, limit: int | None = None, progress: bool = True,
             resume: bool = False, split: str | None = None, device: str = "cpu") -> Path:
    """Pretrain `pretext` on split `split` of `dataset` (default: its train split); returns the checkpoint's path.

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
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    if pretext.name != "random":
        seconds = train_loop(model.to(dev), images, pretext, train, out_dir, meta, progress, resume, dev)
    if distributed.is_main():
        state = {k: v.cpu() for k, v in model.state_dict().items()}
        save_checkpoint(path, {**meta, "model": state, "pretrain_seconds": seconds, "done": True})
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


def train_loop(model, images: torch.Tensor, pretext: PretextConfig, cfg: TrainConfig, out_dir: Path, meta: dict,
               progress: bool = True, resume: bool = False, device: torch.device = torch.device("cpu")) -> float:
    """images: uint8 (N, C, H, W), in memory or memory-mapped; `model` already on `device`.

    Returns the training seconds (over resumes too).
    """
    rank, world = distributed.rank(), distributed.world_size()
    if cfg.batch_size % world:
        raise UserError(f"the global batch of {cfg.batch_size} does not split evenly over {world} processes.")
    local = cfg.batch_size // world
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
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)

    step, order, sums, seconds_before = 0, None, {}, 0.0
    last = out_dir / "last.pt"
    if resume and last.exists():
        state = load_checkpoint(last)
        if any(state[k] != meta[k] for k in ("encoder", "pretext", "train", "data")):
            raise UserError(f"{last} belongs to a run with other settings; drop --resume or use another --out.")
        model.load_state_dict(state["model"])
        opt_g.load_state_dict(state["opt_g"])
        if opt_d is not None:
            opt_d.load_state_dict(state["opt_d"])
        scaler.load_state_dict(state["scaler"])
        gen.set_state(state["rng_generator"])
        torch.set_rng_state(state["rng_torch"])
        step, order, sums, seconds_before = state["step"], state["order"], state["sums"], state["seconds"]
    log_path = out_dir / "log.jsonl"
    if distributed.is_main():
        truncate_log(log_path, step)

    def snapshot() -> None:
        """Everything `--resume` needs to continue exactly where this step left off."""
        save_checkpoint(last, {
            **meta, "model": model.state_dict(), "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict() if opt_d is not None else None, "scaler": scaler.state_dict(),
            "rng_generator": gen.get_state(), "rng_torch": torch.get_rng_state(),
            "step": step, "order": order, "sums": sums, "seconds": seconds_before + time.perf_counter() - tic, "done": False,
        })

    model.train()
    bar = tqdm(total=total, initial=step, desc=f"pretrain {pretext.name}", unit="step",
               disable=not progress or not distributed.is_main(), dynamic_ncols=True)
    tic = time.perf_counter()
    start_step = step
    with bar:
        while step < total:
            i = step % steps_per_epoch
            if i == 0:
                order = torch.randperm(n, generator=gen)
            index = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            # Masks are drawn for the whole global batch on every process, so each process's
            # slice is exactly what a single process would use for those images.
            masks = sample_masks(pretext.mask, cfg.batch_size, size, gen, **pretext.mask_options(size)) if pretext.uses_masks else None
            mine = slice(rank * local, (rank + 1) * local)
            raw = images[index].to(device, non_blocking=True)
            # Crops and flips, like masks, are drawn for the global batch, then sliced.
            batch = (random_crop_flip(raw, size, gen) if cfg.augment else to_model_input(raw, size))[mine]
            masks = masks[mine].to(device) if masks is not None else None

            with autocast(device, cfg.amp):
                out = model.forward_loss(batch, masks)
            metrics = {"loss_rec": out["loss_rec"]}
            loss = out["loss_rec"]
            if disc is not None:
                # Discriminator step on real vs predicted content (generator frozen).
                with autocast(device, cfg.amp):
                    loss_d = discriminator_loss(disc(out["real_view"]), disc(out["fake_view"].detach()))
                check_finite(distributed.mean({"d": loss_d})["d"], "discriminator loss", step, last)
                opt_d.zero_grad(set_to_none=True)
                scaler.scale(loss_d).backward()
                scaler.unscale_(opt_d)  # average true gradients, not scaled ones, over processes
                distributed.average_gradients(disc.parameters())
                scaler.step(opt_d)
                with autocast(device, cfg.amp):
                    loss_adv = generator_loss(disc(out["fake_view"]))
                loss = pretext.lambda_rec * out["loss_rec"] + pretext.lambda_adv * loss_adv
                metrics.update(loss_d=loss_d, loss_adv=loss_adv)
            metrics = distributed.mean({**metrics, "loss": loss})
            check_finite(metrics.pop("loss"), "loss", step, last)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt_g)
            distributed.average_gradients(model.generator_parameters())
            scaler.step(opt_g)
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
                bar.set_postfix(loss=f"{means['loss_rec']:.4f}")
                sums = {}
            if distributed.is_main() and step < total and (step % cfg.checkpoint_every == 0 or step % steps_per_epoch == 0):
                snapshot()
    return seconds_before + time.perf_counter() - tic


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


def check_finite(loss: torch.Tensor, what: str, step: int, last: Path) -> None:
    """Stop before a non-finite loss reaches the weights (the discriminator's is checked before its step too)."""
    if not torch.isfinite(loss):
        raise TrainingDiverged(
            f"the {what} became {loss.item()} at step {step}; training stopped (lower --lr); "
            f"the last good snapshot, if any, is kept as {last}."
        )
