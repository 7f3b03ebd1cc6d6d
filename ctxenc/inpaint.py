"""The job behind `ctxenc inpaint`: a context-encoder checkpoint fills a hole in the user's images.

Each image (PNG, JPEG, anything Pillow reads; any size and mode) is converted to the model's
channels (grayscale `L` or `RGB`), centre-cropped to its largest square and resized to the
model's input size with bicubic resampling; the model works at that size, so the outputs do too.
The hole is the checkpoint's central hole (`center`) or a mask image whose white pixels (>= 128
after conversion to grayscale) mark the hole, cropped and resized the same way (nearest
neighbour). Per image it writes `<name>_inpainted.png` and `<name>_side_by_side.png` (input with
the hole in red / result / original, each panel enlarged to at least 128 px with nearest
neighbour so small images stay visible).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ctxenc.checkpoint import load_checkpoint, rebuild_model
from ctxenc.errors import UserError
from ctxenc.evaluators.inpainting import complete_with_model, hole_for, require_context_encoder, to_unit


def square_resize(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    """Centre-crop to the largest square, then resize to size x size."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square if side == size else square.resize((size, size), resample)


def read_image(path: Path, channels: int, size: int) -> torch.Tensor:
    """-> (C, size, size) in [-1, 1]; a file Pillow cannot decode raises UserError."""
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(square_resize(image, size, Image.Resampling.BICUBIC), dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise UserError(f"{path} is not a readable image ({reason}); skipped it.") from None
    x = torch.from_numpy(pixels / 127.5 - 1.0)
    return x[None] if channels == 1 else x.permute(2, 0, 1)


def read_mask(spec: str, model, size: int) -> torch.Tensor:
    """'center' or a mask image -> bool (1, 1, size, size), True in the hole."""
    if spec == "center":
        return hole_for(model, size)
    path = Path(spec)
    try:
        with Image.open(path) as image:
            pixels = np.asarray(square_resize(image.convert("L"), size, Image.Resampling.NEAREST))
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UserError(f"--mask {spec} is neither 'center' nor a readable mask image ({str(err).splitlines()[0][:120]}).") from None
    mask = torch.from_numpy(pixels >= 128)[None, None]
    if not mask.any() or mask.all():
        raise UserError(f"mask {spec} has {'no' if not mask.any() else 'only'} white (hole) pixels; white marks the hole, black the kept context.")
    if model.cfg.predict == "center":
        box = torch.zeros_like(mask)
        lo, side = size // 4, size // 2
        box[..., lo : lo + side, lo : lo + side] = True
        if (mask & ~box).any():
            raise UserError(f"this model fills only the central {side} px square; draw the mask's white pixels inside it.")
    return mask


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, S, S) in [-1, 1] -> (S, S) or (S, S, 3) uint8."""
    pixels = (to_unit(x) * 255).round().byte().permute(1, 2, 0).numpy()
    return pixels[..., 0] if pixels.shape[2] == 1 else pixels


def side_by_side(masked: torch.Tensor, completed: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> Image.Image:
    """Three RGB panels, input with the hole in red / result / original, 4 px apart."""
    def rgb(x: torch.Tensor) -> torch.Tensor:
        return x.expand(3, -1, -1) if x.shape[0] == 1 else x

    hole = torch.where(mask[0], torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1), rgb(masked))
    size = completed.shape[-1]
    scale = max(1, -(-128 // size))
    panels = [Image.fromarray(to_uint8(p)).resize((size * scale, size * scale), Image.Resampling.NEAREST)
              for p in (hole, rgb(completed), rgb(original))]
    gap = 4
    sheet = Image.new("RGB", (3 * size * scale + 2 * gap, size * scale), "white")
    for i, panel in enumerate(panels):
        sheet.paste(panel, (i * (size * scale + gap), 0))
    return sheet


def inpaint_files(checkpoint: str | Path, images: list[Path], mask_spec: str, out: Path) -> tuple[list[Path], list[str]]:
    """Inpaint every readable image; returns (written files, one error sentence per bad image)."""
    model = rebuild_model(load_checkpoint(checkpoint)).eval()
    require_context_encoder(model)
    channels, size = model.encoder.in_channels, model.encoder.input_size
    mask = read_mask(mask_spec, model, size)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    written, errors, used = [], [], set()
    for path in images:
        try:
            x = read_image(path, channels, size)[None]
        except UserError as err:
            errors.append(str(err))
            continue
        name = path.stem if path.stem not in used else f"{path.stem}_{len(used)}"
        used.add(name)
        completed = complete_with_model(model, x, mask)[0]
        masked = torch.where(mask[0], model.fill.view(-1, 1, 1), x[0])
        Image.fromarray(to_uint8(completed)).save(out / f"{name}_inpainted.png")
        side_by_side(masked, completed, x[0], mask).save(out / f"{name}_side_by_side.png")
        written += [out / f"{name}_inpainted.png", out / f"{name}_side_by_side.png"]
    return written, errors
