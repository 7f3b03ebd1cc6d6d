"""The job behind `ctxenc inpaint`: a context-encoder checkpoint fills a hole in the user's images,
at the images' own resolution.

Per image (PNG, JPEG, anything Pillow reads; any size), read as grayscale `L` or `RGB` (alpha
and palettes dropped):
1. The model sees the image's central square (the largest one), converted to its channels and
   resized (bicubic) to its input size S.
2. The hole, in the model's S x S view: by default drawn like the checkpoint's training masks
   (its `center` square, or a `random_region` / `random_block` mask from a generator seeded with
   `seed`, one draw per image in the order given); or a mask image whose white pixels (>= 128 in
   grayscale) mark the hole in the image's own pixels (resized to the image, nearest neighbour,
   when its size differs). A mask-image hole must lie inside the central square, and the model's
   hole is every S x S pixel that covers a hole pixel.
3. The model's completion (its prediction blended over the overlap border) is resized back to the
   square's size (bicubic) and written into the hole pixels only: every other pixel of the output
   is the input's own, unchanged.

For IMAGE it writes OUT/IMAGE.inpainted.png (the filled image, the input's size and color mode) and
OUT/IMAGE.side_by_side.png (input with the hole in red / result / original, each panel enlarged
with nearest neighbour to at least 128 px on its shorter side), IMAGE being the input's full file
name (`a.png` -> `a.png.inpainted.png`), so `a.png` and `a.jpg` never share an output.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ctxenc.checkpoint import checkpoint_file, load_checkpoint, rebuild_model
from ctxenc.device import resolve_device
from ctxenc.errors import UserError
from ctxenc.evaluators.inpainting import complete_with_model, to_unit
from ctxenc.masks import MASKS, sample_masks

GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError)


def first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:120] if str(err) else type(err).__name__


def read_image(path: Path) -> np.ndarray:
    """-> uint8 (H, W) for a grayscale file, (H, W, 3) otherwise; a file Pillow cannot decode raises UserError."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L" if image.mode in GRAY_MODES else "RGB")).copy()
    except READ_ERRORS as err:
        raise UserError(f"{path} is not a readable image ({first_line(err)}); skipped it.") from None


def read_mask_image(spec: str) -> np.ndarray:
    """A mask image -> uint8 (H, W) grayscale; white (>= 128) marks the hole."""
    try:
        with Image.open(spec) as image:
            mask = np.asarray(image.convert("L")).copy()
    except READ_ERRORS as err:
        raise UserError(f"--mask {spec} is neither a mask kind ({', '.join(MASKS)}) nor a readable mask image ({first_line(err)}).") from None
    check_some_hole(mask >= 128, spec)
    return mask


def check_some_hole(hole: np.ndarray, spec: str) -> None:
    if not hole.any() or hole.all():
        raise UserError(f"mask {spec} has {'no' if not hole.any() else 'only'} white (hole) pixels; white marks the hole, black the kept context.")


def central_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the largest centred square of an image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def model_view(pixels: np.ndarray, square: tuple[int, int, int], channels: int, size: int) -> torch.Tensor:
    """uint8 (H, W[, 3]) -> the model's input (C, S, S) in [-1, 1]: the square, in the model's channels, at S px."""
    top, left, side = square
    image = Image.fromarray(pixels[top : top + side, left : left + side]).convert("L" if channels == 1 else "RGB")
    if side != size:
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    return x[None] if channels == 1 else x.permute(2, 0, 1)


def hole_from_model(hole: torch.Tensor, square: tuple[int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """A hole in the model's view, bool (S, S) -> bool (H, W) on the image (nearest neighbour)."""
    top, left, side = square
    full = np.zeros(shape, dtype=bool)
    up = F.interpolate(hole[None, None].float(), size=(side, side), mode="nearest-exact")[0, 0] > 0.5
    full[top : top + side, left : left + side] = up.numpy()
    return full


def hole_from_image(mask: np.ndarray, square: tuple[int, int, int], shape: tuple[int, int], size: int, spec: str) -> tuple[np.ndarray, torch.Tensor]:
    """A mask image, uint8 (h, w) -> (hole on the image, bool (H, W); hole in the model's view, bool (S, S))."""
    if mask.shape != shape:
        mask = np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
    full = mask >= 128
    check_some_hole(full, spec)  # resizing can lose a small hole
    top, left, side = square
    inside = np.zeros_like(full)
    inside[top : top + side, left : left + side] = True
    if (full & ~inside).any():
        raise UserError(f"mask {spec} marks pixels outside the image's central {side} x {side} px square, "
                        "the part the model sees; keep the hole inside it.")
    crop = torch.from_numpy(full[top : top + side, left : left + side]).float()[None, None]
    # Adaptive max pooling: a model pixel is in the hole if any image pixel it covers is.
    return full, F.adaptive_max_pool2d(crop, size)[0, 0] > 0.5


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, h, w) in [-1, 1] -> (h, w) or (h, w, 3) uint8."""
    pixels = (to_unit(x) * 255).round().byte().permute(1, 2, 0).numpy()
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def fill_hole(model, pixels: np.ndarray, hole: np.ndarray, model_hole: torch.Tensor) -> np.ndarray:
    """The image uint8 (H, W[, 3]) with its hole pixels, bool (H, W), replaced by the model's fill.

    model_hole: bool (S, S), the hole in the model's view of the central square. Pixels outside
    `hole` are copied from `pixels`, so they are the input's exactly.
    """
    size, channels = model.encoder.input_size, model.encoder.in_channels
    square = central_square(*pixels.shape[:2])
    top, left, side = square
    x = model_view(pixels, square, channels, size)[None]
    completed = complete_with_model(model, x, model_hole[None, None])  # (1, C, S, S) in [-1, 1]
    if side != size:
        completed = F.interpolate(completed, size=(side, side), mode="bicubic", align_corners=False)
    fill = Image.fromarray(to_uint8(completed[0])).convert("L" if pixels.ndim == 2 else "RGB")  # to the input's mode
    out = pixels.copy()
    region = out[top : top + side, left : left + side]  # a view: writes go into `out`
    in_square = hole[top : top + side, left : left + side]
    region[in_square] = np.asarray(fill)[in_square]
    return out


def side_by_side(pixels: np.ndarray, result: np.ndarray, hole: np.ndarray) -> Image.Image:
    """Three RGB panels, input with the hole in red / result / original, 4 px apart."""
    def rgb(p: np.ndarray) -> np.ndarray:
        return np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p

    marked = rgb(pixels).copy()
    marked[hole] = (255, 0, 0)
    h, w = hole.shape
    scale = max(1, math.ceil(128 / min(h, w)))
    gap = 4
    sheet = Image.new("RGB", (3 * w * scale + 2 * gap, h * scale), "white")
    for i, panel in enumerate((marked, rgb(result), rgb(pixels))):
        sheet.paste(Image.fromarray(panel).resize((w * scale, h * scale), Image.Resampling.NEAREST), (i * (w * scale + gap), 0))
    return sheet


def output_names(images: list[Path], out: Path) -> list[Path]:
    """The distinct inputs, in order; two different files of one name, or an output that would
    overwrite an input, are a UserError."""
    unique, seen = [], {}
    for path in images:
        if path.resolve() in seen.values():
            continue  # the same file twice: one output
        if path.name in seen:
            raise UserError(f"{seen[path.name]} and {path} share the file name {path.name}, so their outputs would collide; "
                            "inpaint them into different --out folders.")
        seen[path.name] = path.resolve()
        unique.append(path)
    inputs = set(seen.values())
    for path in unique:
        for suffix in ("inpainted", "side_by_side"):
            if (out / f"{path.name}.{suffix}.png").resolve() in inputs:
                raise UserError(f"the output {out / f'{path.name}.{suffix}.png'} would overwrite an input; choose another --out folder.")
    return unique


def default_holes(model, kind: str, n: int, seed: int) -> torch.Tensor:
    """n holes of `kind` in the model's view, bool (n, S, S): the checkpoint's own mask options
    when `kind` is the mask it trained with, the kind's defaults otherwise."""
    size, cfg = model.encoder.input_size, model.cfg
    if cfg.predict == "center" and kind != "center":
        raise UserError(f"this model fills only the central square; use --mask center or a mask image inside it, not {kind}.")
    options = cfg.mask_options(size) if kind == cfg.mask else {}
    return sample_masks(kind, n, size, torch.Generator().manual_seed(seed), **options)[:, 0]


def check_inside_center(model, model_hole: torch.Tensor, spec: str) -> None:
    """A model that decodes only the central S/2 square cannot fill a hole outside it."""
    if model.cfg.predict != "center":
        return
    size = model.encoder.input_size
    lo, side = size // 4, size // 2
    box = torch.zeros_like(model_hole)
    box[lo : lo + side, lo : lo + side] = True
    if (model_hole & ~box).any():
        raise UserError(f"this model fills only the central {side} px of its {size} px view; keep the white pixels of {spec} "
                        "inside the middle half (each way) of the image's central square.")


def load_inpainter(checkpoint: str | Path, device: str):
    """The checkpoint's context-encoder model, in eval mode on `device`; other pretexts are a UserError."""
    path = checkpoint_file(checkpoint)
    model = rebuild_model(load_checkpoint(path)).eval()
    name = getattr(model, "name", "random")
    if name != "context_encoder":
        raise UserError(f"{path} was pretrained with {name}, and only context_encoder checkpoints fill holes; "
                        "pretrain one with --pretext context_encoder.")
    return model.to(resolve_device(device))


def inpaint_files(checkpoint: str | Path, images: list[Path], mask_spec: str | None, out: Path,
                  device: str = "cpu", seed: int = 0) -> tuple[list[Path], list[str]]:
    """Inpaint every readable image (see the module docstring); returns (written files, one error sentence per bad image).

    mask_spec: None (the checkpoint's mask kind), a kind in MASKS, or a mask image's path.
    """
    model = load_inpainter(checkpoint, device)
    images = output_names(images, out)
    kind = model.cfg.mask if mask_spec is None else mask_spec
    holes = default_holes(model, kind, len(images), seed) if kind in MASKS else None
    mask = read_mask_image(mask_spec) if holes is None else None
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    written, errors = [], []
    for i, path in enumerate(images):
        try:
            pixels = read_image(path)
            square = central_square(*pixels.shape[:2])
            if holes is not None:
                model_hole = holes[i]
                hole = hole_from_model(model_hole, square, pixels.shape[:2])
            else:
                hole, model_hole = hole_from_image(mask, square, pixels.shape[:2], model.encoder.input_size, mask_spec)
                check_inside_center(model, model_hole, mask_spec)
        except UserError as err:
            errors.append(str(err))
            continue
        result = fill_hole(model, pixels, hole, model_hole)
        Image.fromarray(result).save(out / f"{path.name}.inpainted.png")
        side_by_side(pixels, result, hole).save(out / f"{path.name}.side_by_side.png")
        written += [out / f"{path.name}.inpainted.png", out / f"{path.name}.side_by_side.png"]
    return written, errors
