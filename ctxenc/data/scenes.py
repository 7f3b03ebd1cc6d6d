"""FashionScenes: a deterministic, VOC-like miniature built from Fashion-MNIST items.

Each scene is an RGB canvas (size x size) on a textured background (a base colour, smooth
colour noise and faint stripes) holding 1-4 tinted, scaled, possibly overlapping Fashion-MNIST
items. Per scene it gives what PASCAL VOC gives per image:

- a multi-hot label over the 10 item classes (-> multi-label classification mAP, like VOC07);
- a per-pixel class map, 0 = background, 1-10 = item class + 1, `IGNORE` (255, VOC's value) on
  the soft fringe of an item where the pixel mixes it with what lies below (-> mIoU, like VOC12);
- boxes (x0, y0, x1, y1 inclusive, with the class) around each item's visible pixels.

Train scenes use train items and test scenes test items, so no item is in both. An item that
later items would hide below `min_visible` labelled pixels is moved (up to `placement_tries`
times) or dropped, so every labelled class has pixels in the map. Scenes are cached on disk
under `$CTXENC_CACHE` (default `~/.cache/ctxenc`), keyed by the parameters, the generator
version and a hash of the source items.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ctxenc.data import ImageDataset
from ctxenc.errors import UserError
from ctxenc.io import atomic_write, cache_root

IGNORE = 255
NUM_ITEM_CLASSES = 10
GENERATOR_VERSION = 1  # bump whenever the drawing changes: it is part of the cache key
SPLIT_OFFSET = {"train": 0, "test": 1_000_003}  # test scenes draw from a different stream


@dataclass(frozen=True)
class ScenesConfig:
    """size: canvas side in px; *_scenes: scenes per split; items per scene in [min_items, max_items];
    an item's side is a fraction in [min_scale, max_scale] of the canvas."""

    size: int = 32
    train_scenes: int = 4000
    test_scenes: int = 1000
    min_items: int = 1
    max_items: int = 4
    min_scale: float = 0.45
    max_scale: float = 0.8
    min_visible: int = 12
    placement_tries: int = 10
    seed: int = 0

    def __post_init__(self):
        if self.size < 16:
            raise UserError(f"FashionScenes needs a canvas of at least 16 px, got size {self.size}.")
        if not 1 <= self.min_items <= self.max_items:
            raise UserError(f"FashionScenes needs 1 <= min_items <= max_items, got {self.min_items} and {self.max_items}.")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise UserError(f"FashionScenes needs 0 < min_scale <= max_scale <= 1, got {self.min_scale} and {self.max_scale}.")
        if self.train_scenes < 1 or self.test_scenes < 1:
            raise UserError(f"FashionScenes needs at least one scene per split, got {self.train_scenes} and {self.test_scenes}.")


def load_fashion_scenes(split: str, cfg: ScenesConfig, items: ImageDataset) -> ImageDataset:
    """The scenes of `split` built from `items` (Fashion-MNIST of the same split), cached on disk."""
    fingerprint = hashlib.sha1(items.images.numpy().tobytes() + items.labels.numpy().tobytes()).hexdigest()[:12]
    key = hashlib.sha1(json.dumps({**asdict(cfg), "version": GENERATOR_VERSION, "items": fingerprint},
                                  sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "fashion_scenes" / key / f"{split}.pt"
    if path.is_file():
        data = torch.load(path, weights_only=True)
    else:
        count = cfg.train_scenes if split == "train" else cfg.test_scenes
        data = make_scenes(items.images, items.labels, count, cfg, cfg.seed + SPLIT_OFFSET[split])
        atomic_write(path, lambda f: torch.save(data, f))
        (path.parent / "config.json").write_text(json.dumps({**asdict(cfg), "version": GENERATOR_VERSION, "items": fingerprint}, indent=1))
    return ImageDataset(name="fashion_scenes", split=split, images=data["images"], labels=data["labels"],
                        num_classes=NUM_ITEM_CLASSES, task="multi_label", class_maps=data["class_maps"], boxes=data["boxes"])


def backgrounds(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """-> (n, 3, size, size) in [0, 1]: base colour + smooth colour noise + faint oriented stripes + grain."""
    base = 0.15 + 0.7 * torch.rand(n, 3, 1, 1, generator=gen)
    smooth = F.interpolate(torch.rand(n, 3, 4, 4, generator=gen) - 0.5, size=(size, size), mode="bicubic", align_corners=False)
    coords = torch.arange(size, dtype=torch.float32) / size
    angle = torch.rand(n, 1, 1, generator=gen) * torch.pi
    freq = 2 + 5 * torch.rand(n, 1, 1, generator=gen)
    phase = 2 * torch.pi * torch.rand(n, 1, 1, generator=gen)
    along = coords.view(1, 1, size) * angle.cos() + coords.view(1, size, 1) * angle.sin()
    stripes = torch.sin(2 * torch.pi * freq * along + phase).unsqueeze(1)  # (n, 1, size, size)
    grain = 0.03 * torch.randn(n, 3, size, size, generator=gen)
    return (base + 0.4 * smooth + 0.08 * stripes + grain).clamp(0, 1)


def make_scenes(item_images: torch.Tensor, item_labels: torch.Tensor, count: int, cfg: ScenesConfig,
                seed: int) -> dict[str, torch.Tensor]:
    """item_images: uint8 (M, 1, 28, 28), item_labels: (M,) -> {images uint8 (count, 3, S, S),
    labels float32 (count, 10), class_maps uint8 (count, S, S), boxes int16 (count, max_items, 5)}.

    A box row is (class, x0, y0, x1, y1), inclusive; unused rows are -1.
    """
    gen = torch.Generator().manual_seed(seed)
    size = cfg.size
    canvases = backgrounds(count, size, gen)
    class_maps = torch.zeros(count, size, size, dtype=torch.uint8)
    labels = torch.zeros(count, NUM_ITEM_CLASSES)
    boxes = torch.full((count, cfg.max_items, 5), -1, dtype=torch.int16)
    for s in range(count):
        k = int(torch.randint(cfg.min_items, cfg.max_items + 1, (1,), generator=gen))
        canvas = canvases[s]
        owner = torch.full((size, size), -1, dtype=torch.long)  # which placed item a pixel shows
        fringe = torch.zeros(size, size, dtype=torch.bool)  # mixes an item with what lies below
        classes: list[int] = []
        draws = 0
        while draws < k or not classes:  # an item that fits nowhere is dropped, but a scene keeps one
            draws += 1
            idx = int(torch.randint(len(item_images), (1,), generator=gen))
            for _ in range(cfg.placement_tries):
                placed = place_item(canvas, owner, fringe, item_images[idx], len(classes), cfg, gen)
                visible = torch.bincount(placed[1][~placed[2] & (placed[1] >= 0)], minlength=len(classes) + 1)
                if (visible >= cfg.min_visible).all():
                    canvas, owner, fringe = placed
                    classes.append(int(item_labels[idx]))
                    break
        canvases[s] = canvas
        class_of = torch.tensor([0] + [c + 1 for c in classes], dtype=torch.uint8)
        cmap = class_of[owner + 1]
        cmap[fringe] = IGNORE
        class_maps[s] = cmap
        for j, c in enumerate(classes):
            labels[s, c] = 1.0
            ys, xs = torch.nonzero((owner == j) & ~fringe, as_tuple=True)
            boxes[s, j] = torch.tensor([c, xs.min(), ys.min(), xs.max(), ys.max()], dtype=torch.int16)
    images = (canvases * 255).round().to(torch.uint8)
    return {"images": images, "labels": labels, "class_maps": class_maps, "boxes": boxes}


def place_item(canvas: torch.Tensor, owner: torch.Tensor, fringe: torch.Tensor, item: torch.Tensor, index: int,
               cfg: ScenesConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paint one item (uint8 (1, 28, 28)) at a random scale, place and tint; returns new copies of
    canvas (3, S, S), owner (S, S) and fringe (S, S)."""
    size = cfg.size
    side = int(round(size * (cfg.min_scale + (cfg.max_scale - cfg.min_scale) * float(torch.rand(1, generator=gen)))))
    side = max(8, min(side, size))
    top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=gen))
    tint = 0.1 + 0.9 * torch.rand(3, 1, 1, generator=gen)
    gray = F.interpolate(item.float().unsqueeze(0) / 255, size=(side, side), mode="bilinear",
                         antialias=True, align_corners=False)[0]  # (1, side, side) in [0, 1]
    # Faint pixels are transparent; the item's own shading modulates its tint.
    alpha = ((gray - 0.05) / 0.25).clamp(0, 1)
    colour = tint * (0.35 + 0.65 * gray)
    canvas, owner, fringe = canvas.clone(), owner.clone(), fringe.clone()
    window = (slice(top, top + side), slice(left, left + side))
    canvas[:, window[0], window[1]] = alpha * colour + (1 - alpha) * canvas[:, window[0], window[1]]
    solid, soft = alpha[0] >= 0.5, (alpha[0] > 0.1) & (alpha[0] < 0.5)
    owner[window][solid] = index
    fringe[window][solid] = False
    fringe[window][soft] = True
    return canvas, owner, fringe
