"""Inpainting quality (Pathak et al. 2016, Table 1): every method fills the same hole of the same
held-out images, and is scored on the hole only.

Methods (all images (N, C, S, S) in [-1, 1]; one hole shared by all images, bool (1, 1, S, S)):
- `mean_fill`: every hidden pixel set to the training images' per-channel mean;
- `biharmonic`: `skimage.restoration.inpaint_biharmonic`, image by image;
- `nn_hog`: nearest-neighbour inpainting (the paper's first row): the training image whose
  context is nearest in L2 over HOG features (`skimage.feature.hog`) pastes its hole content;
- `nn_features`: the same with the checkpoint's encoder features (its last stage, all cells
  flattened) as the context descriptor (the paper's second row);
- `context_encoder`: the checkpoint's prediction in the hole, blended over the overlap border
  (`blend_overlap`).
HOG and encoder features are computed on the image with the hole filled by a constant, the same
for every image, so they describe the context only.

Metrics (x the original, y the inpainted image, both mapped from [-1, 1] to [0, 1] with y
clipped to [0, 1]; H the hole's pixels, C channels, N images):
- `l1` = 1/N sum_n 1/(|H| C) sum_{p in H, c} |y - x|               (the paper's "mean L1")
- `l2` = 1/N sum_n mse_n, mse_n = 1/(|H| C) sum_{p in H, c} (y - x)^2 (the paper's "mean L2")
- `psnr` = 1/N sum_n 10 log10(1 / max(mse_n, 1e-10))               dB, per image then averaged
- `ssim` = 1/N sum_n SSIM(y_n, x_n) on the hole's bounding box: scikit-image's
  `structural_similarity` (Wang et al. 2004; 7x7 uniform window, K1 0.01, K2 0.03, data range
  1, channels averaged)
- `sharpness` = sum_n G(y_n) / sum_n G(x_n), G the gradient energy in the hole: the sum of
  squared horizontal and vertical forward differences over pixel pairs that both lie in the
  hole. 1: as much fine detail as the originals; a blurry fill is below 1, mean fill is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Iterator

import numpy as np
import torch

from ctxenc.errors import UserError
from ctxenc.evaluators.features import Images, batched
from ctxenc.evaluators.inputs import ModelInputs
from ctxenc.masks import apply_mask, overlap_border, sample_masks

METHODS = ("mean_fill", "biharmonic", "nn_hog", "nn_features", "context_encoder")
METRICS = ("l1", "l2", "psnr", "ssim", "sharpness")


@dataclass(frozen=True)
class InpaintingConfig:
    """num_images: the first N test images; methods: a subset of METHODS; hog_cell: HOG cell side
    in px (blocks of 2x2 cells, `hog_orientations` bins)."""

    uses_model: ClassVar[bool] = True  # evaluate() passes the whole pretext model, not just its encoder
    num_images: int = 1000
    methods: tuple[str, ...] = METHODS
    hog_cell: int = 4
    hog_orientations: int = 9
    batch_size: int = 500

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise UserError(f"unknown inpainting method {unknown[0]!r}; valid methods: {', '.join(METHODS)}.")
        if self.num_images < 1 or self.hog_cell < 1 or self.batch_size < 1:
            raise UserError("inpainting needs num_images, hog_cell and batch_size of at least 1.")


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clipped."""
    return ((x + 1) / 2).clamp(0, 1)


def inpainting_metrics(completed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """completed, original: (N, C, S, S) in [-1, 1]; mask: bool (1, 1, S, S) -> the metrics above."""
    y, x = to_unit(completed).double(), to_unit(original).double()
    hole = mask.expand_as(x)
    count = mask.sum() * x.shape[1]
    mse = ((y - x).pow(2) * hole).sum(dim=(1, 2, 3)) / count
    mae = ((y - x).abs() * hole).sum(dim=(1, 2, 3)) / count
    psnr = 10 * torch.log10(1 / mse.clamp_min(1e-10))
    return {
        "l1": mae.mean().item(),
        "l2": mse.mean().item(),
        "psnr": psnr.mean().item(),
        "ssim": hole_ssim(y, x, mask),
        "sharpness": (gradient_energy(y, mask).sum() / gradient_energy(x, mask).sum()).item(),
    }


def hole_ssim(y: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean SSIM over images of the hole's bounding box; y, x (N, C, S, S) in [0, 1]."""
    from skimage.metrics import structural_similarity  # skimage is imported where used (~0.5 s)

    rows, cols = torch.nonzero(mask[0, 0], as_tuple=True)
    box = (..., slice(rows.min().item(), rows.max().item() + 1), slice(cols.min().item(), cols.max().item() + 1))
    side = min(box[1].stop - box[1].start, box[2].stop - box[2].start)
    win = min(7, side if side % 2 else side - 1)  # the window must fit the box and be odd
    if win < 3:
        raise UserError(f"the hole is {side} px across; SSIM needs at least 3 px.")
    scores = [structural_similarity(a[box].numpy(), b[box].numpy(), data_range=1.0, win_size=win, channel_axis=0)
              for a, b in zip(y, x)]
    return float(np.mean(scores))


def gradient_energy(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (N, C, S, S), mask bool (1, 1, S, S) -> (N,): squared forward differences within the hole."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2) * (mask[..., :, 1:] & mask[..., :, :-1])
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2) * (mask[..., 1:, :] & mask[..., :-1, :])
    return dx.sum(dim=(1, 2, 3)) + dy.sum(dim=(1, 2, 3))


def blend_overlap(images: torch.Tensor, prediction: torch.Tensor, masks: torch.Tensor, overlap_px: int) -> torch.Tensor:
    """Paste the prediction into the hole and fade it out over the overlap border.

    A border pixel d px (Chebyshev) from the hole takes weight 1 - d / (overlap_px + 1) for the
    prediction, the rest from the context: no seam where the fill meets the image. The hole
    itself is all prediction, so scores over the hole do not depend on the blend.
    images, prediction: (B, C, S, S); masks: bool (B or 1, 1, S, S) -> (B, C, S, S).
    """
    alpha = masks.float()
    inner = torch.zeros_like(masks)
    for d in range(1, overlap_px + 1):
        within = overlap_border(masks, d)
        alpha = alpha + (within & ~inner).float() * (1 - d / (overlap_px + 1))
        inner = within
    return alpha * prediction + (1 - alpha) * images


def complete_with_model(model, images: torch.Tensor, mask: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The context encoder's blended completion. images (N, C, S, S) in [-1, 1], mask (1, 1, S, S)."""
    model.eval()
    device = model.fill.device  # batches go where the model is (--device), results come back to the CPU

    def complete(x):
        masks = mask.to(device).expand(len(x), -1, -1, -1)
        return blend_overlap(x, model(apply_mask(x, masks, model.fill)), masks, model.cfg.overlap_px)

    return batched(complete, images, batch_size, device)


def channel_mean(images: Images, batch_size: int = 500) -> torch.Tensor:
    """(C,) per-channel mean of images (N, C, S, S) in [-1, 1], summed batch by batch in float64."""
    total = sum(images[i : i + batch_size].to("cpu").double().sum(dim=(0, 2, 3)) for i in range(0, len(images), batch_size))
    n, _, h, w = images.shape
    return (total / (n * h * w)).float()


def mean_fill(train: Images, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden pixels <- the per-channel mean of the training images."""
    return apply_mask(images, mask.expand(len(images), -1, -1, -1), channel_mean(train))


def biharmonic(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`skimage.restoration.inpaint_biharmonic` on each image (solved in [0, 1])."""
    from skimage.restoration import inpaint_biharmonic

    hole = mask[0, 0].numpy()
    out = []
    for x in to_unit(images).numpy():
        if x.shape[0] == 1:
            filled = inpaint_biharmonic(x[0], hole)[None]
        else:
            filled = inpaint_biharmonic(np.moveaxis(x, 0, -1), hole, channel_axis=-1).transpose(2, 0, 1)
        out.append(torch.from_numpy(filled).float() * 2 - 1)
    return torch.stack(out)


def hog_features(images: Images, mask: torch.Tensor, cell: int = 4, orientations: int = 9, batch_size: int = 500) -> torch.Tensor:
    """HOG of the context: (N, C, S, S) in [-1, 1] -> (N, D); the hole is set to 0 first."""
    from skimage.feature import hog

    channel_axis = None if images.shape[1] == 1 else -1
    rows = []
    for i in range(0, len(images), batch_size):  # only a batch of images is held as float
        x = to_unit(images[i : i + batch_size].to("cpu")).masked_fill(mask, 0.0).numpy()
        rows += [hog(im[0] if channel_axis is None else np.moveaxis(im, 0, -1), orientations=orientations,
                     pixels_per_cell=(cell, cell), cells_per_block=(2, 2), channel_axis=channel_axis) for im in x]
    return torch.from_numpy(np.stack(rows)).float()


def encoder_features(model, images: Images, mask: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The encoder's last stage on the masked image (hole = the model's fill), flattened: (N, D)."""
    model.eval()
    device = model.fill.device
    return batched(lambda x: model.encoder(apply_mask(x, mask.to(device).expand(len(x), -1, -1, -1), model.fill)).flatten(1),
                   images, batch_size, device)


def nearest_neighbours(train_features: torch.Tensor, query_features: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(N, D), (M, D) -> (M,) index of the nearest training row in L2 (the first one on ties)."""
    train_sq = train_features.pow(2).sum(1)
    out = []
    for i in range(0, len(query_features), chunk):
        q = query_features[i : i + chunk]
        # ||q - t||^2 = ||q||^2 + ||t||^2 - 2 q.t; ||q||^2 does not change the argmin.
        out.append((train_sq[None] - 2 * q @ train_features.T).argmin(1))
    return torch.cat(out)


def paste_neighbours(train: Images, images: torch.Tensor, mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Hole of images[i] <- hole of train[index[i]]."""
    return torch.where(mask, train[index].to(images.device), images)


def completions(model, train: Images, scored: Images, mask: torch.Tensor,
                cfg: InpaintingConfig = InpaintingConfig()) -> Iterator[tuple[str, torch.Tensor]]:
    """(method, completed (N, C, S, S)) for cfg.methods, in METHODS order, one at a time.

    train: (N_train, C, S, S) in [-1, 1] (or `ModelInputs`, read batch by batch), the
    nearest-neighbour database and the mean; scored: the images to complete; model: a
    context-encoder `InpaintingModel` (needed by `nn_features` and `context_encoder`).
    """
    images = scored.to("cpu")  # float (N, C, S, S): the few scored images are held whole
    runs: dict[str, Callable[[], torch.Tensor]] = {
        "mean_fill": lambda: mean_fill(train, images, mask),
        "biharmonic": lambda: memo(("biharmonic", mask_key(mask)), (scored,), lambda: biharmonic(images, mask)),
        "nn_hog": lambda: paste_neighbours(train, images, mask, nearest_neighbours(
            memo(("hog", mask_key(mask), cfg.hog_cell, cfg.hog_orientations), (train,),
                 lambda: hog_features(train, mask, cfg.hog_cell, cfg.hog_orientations, cfg.batch_size)),
            hog_features(images, mask, cfg.hog_cell, cfg.hog_orientations, cfg.batch_size))),
        "nn_features": lambda: paste_neighbours(train, images, mask, nearest_neighbours(
            encoder_features(model, train, mask, cfg.batch_size), encoder_features(model, images, mask, cfg.batch_size))),
        "context_encoder": lambda: complete_with_model(model, images, mask, cfg.batch_size),
    }
    for m in METHODS:
        if m in cfg.methods:
            yield m, runs[m]()


def inpaint_all(model, train: Images, scored: Images, mask: torch.Tensor,
                cfg: InpaintingConfig = InpaintingConfig()) -> dict[str, torch.Tensor]:
    """{method: completed (N, C, S, S)} for cfg.methods (`completions`, all held at once: for a few images)."""
    return dict(completions(model, train, scored, mask, cfg))


# A suite evaluates several checkpoints on the same prepared images (`prepared_split` hands out
# the same storage), and the classical baselines do not depend on the checkpoint: compute them
# once per process. Images are keyed by storage address, shape and strides (`ModelInputs`: of
# their uint8 pixels, and the input size); entries keep their images alive, so an address is
# never reused while cached.
_MEMO: dict = {}


def mask_key(mask: torch.Tensor) -> bytes:
    return mask.numpy().tobytes()


def storage_key(images: Images) -> tuple:
    if isinstance(images, ModelInputs):
        return (images.size, *storage_key(images.pixels))
    return images.data_ptr(), tuple(images.shape), images.stride()


def memo(key: tuple, tensors: tuple[Images, ...], compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    full_key = (key, tuple(storage_key(t) for t in tensors))
    if full_key not in _MEMO:
        _MEMO[full_key] = (tensors, compute())
    return _MEMO[full_key][1]


def hole_for(model, size: int) -> torch.Tensor:
    """The central hole a checkpoint is scored on, bool (1, 1, S, S): size/2 square, or the
    smaller hidden square of a model that decodes only the centre."""
    side = model.cfg.mask_options(size).get("side") if model.cfg.mask == "center" else None
    return sample_masks("center", 1, size, side=side)


def require_context_encoder(model) -> None:
    name = getattr(model, "name", "random")
    if name != "context_encoder":
        raise UserError(f"inpainting needs a context_encoder checkpoint, and this one was pretrained with {name}; "
                        "pretrain with --pretext context_encoder.")


def inpainting(model, train: tuple[Images, torch.Tensor], test: tuple[Images, torch.Tensor],
               cfg: InpaintingConfig = InpaintingConfig()) -> dict[str, float]:
    """model: the checkpoint's `InpaintingModel`; train, test: (images (N, C, S, S) in [-1, 1] or
    `ModelInputs`, labels).

    -> {"<method>/<metric>": value} for every method in cfg.methods and every metric in METRICS,
    on the first cfg.num_images test images with the central hole. Each method's completions
    are scored, then dropped, before the next method runs.
    """
    require_context_encoder(model)
    scored = test[0][: cfg.num_images]
    mask = hole_for(model, scored.shape[-1])
    original = scored.to("cpu")
    return {f"{method}/{k}": v for method, y in completions(model, train[0], scored, mask, cfg)
            for k, v in inpainting_metrics(y, original, mask).items()}
