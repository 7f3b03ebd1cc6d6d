"""FashionScenes: a deterministic, VOC-like miniature built from Fashion-MNIST items.

Each scene is an RGB canvas (size x size) on a textured background (a base colour, smooth
colour noise and faint stripes) holding 1-4 tinted, scaled, possibly overlapping Fashion-MNIST
items. Per scene it gives what PASCAL VOC gives per image:

- a multi-hot label over the 10 item classes (-> multi-label classification mAP, like VOC07);
- a per-pixel class map, 0 = background, 1-10 = item class + 1, `IGNORE` (255, VOC's value) on
  the soft fringe of an item where the pixel mixes it with what lies below (-> mIoU, like VOC12);
  an item's silhouette is solid (holes filled), so dark pixels inside it are labelled, never ignored;
- boxes (x0, y0, x1, y1 inclusive, with the class) around each item's visible pixels.

Three splits give the paper's data regime (a large unlabelled pretraining set, a small disjoint
labelled transfer set):
- `pool`: `pool_scenes` scenes (default 50,000) for pretraining, composed from Fashion-MNIST train
  items `labelled_items` onwards (55,000 of the 60,000). They carry labels, maps and boxes too, for a
  supervised reference that pretrains with labels, but self-supervised methods ignore them;
- `train`: `train_scenes` labelled scenes (default 2,000) for transfer, composed only from the first
  `labelled_items` (default 5,000) train items, so no item of `train` appears in `pool`;
- `test`: `test_scenes` scenes (default 1,000) from the Fashion-MNIST test items.
Pretraining uses `pool`; evaluation fits on `train` and scores on `test`. An item set with fewer
than 2 * `labelled_items` items (tiny test data) reserves its first half for `train` instead. An item that
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

from ctxenc.data import ImageDataset, LoadRequest, register_dataset
from ctxenc.data.fashion_mnist import CLASSES as ITEM_CLASSES, load_fashion_mnist
from ctxenc.errors import UserError
from ctxenc.io import atomic_write_text, cache_root, load_verified, save_verified

IGNORE = 255
NUM_ITEM_CLASSES = 10
GENERATOR_VERSION = 2  # bump whenever the drawing changes: it is part of the cache key
SPLITS = ("pool", "train", "test")
SPLIT_OFFSET = {"train": 0, "test": 1_000_003, "pool": 2_000_003}  # each split draws from its own stream
SOLID_GRAY = 0.175  # an item pixel at least this bright is opaque (alpha >= 0.5 below)


@dataclass(frozen=True)
class ScenesConfig:
    """size: canvas side in px; *_scenes: scenes per split (pool, train, test); labelled_items: the
    first this many Fashion-MNIST train items compose `train` scenes, the rest `pool` scenes; items
    per scene in [min_items, max_items]; an item's side is a fraction in [min_scale, max_scale] of the canvas."""

    size: int = 32
    pool_scenes: int = 50_000
    train_scenes: int = 2000
    test_scenes: int = 1000
    labelled_items: int = 5000
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
        if min(self.pool_scenes, self.train_scenes, self.test_scenes) < 1:
            raise UserError(f"FashionScenes needs at least one scene per split, got pool_scenes {self.pool_scenes}, "
                            f"train_scenes {self.train_scenes} and test_scenes {self.test_scenes}.")
        if self.labelled_items < 1:
            raise UserError(f"FashionScenes needs labelled_items >= 1, got {self.labelled_items}.")

    def scenes(self, split: str) -> int:
        return {"pool": self.pool_scenes, "train": self.train_scenes, "test": self.test_scenes}[split]


def split_items(split: str, cfg: ScenesConfig, num_items: int) -> slice:
    """The items `split` composes its scenes from: all test items for `test`; for `train` the first
    `labelled_items` train items (the first half of a smaller set), for `pool` the others."""
    if split == "test":
        return slice(0, num_items)
    labelled = min(cfg.labelled_items, num_items // 2)
    return slice(0, labelled) if split == "train" else slice(labelled, num_items)


@register_dataset("fashion_scenes", SPLITS, ("train", "test"), ("multi_label", "segmentation", "boxes"),
                  pretrain_split="pool", options=ScenesConfig, class_names=ITEM_CLASSES,
                  help="embedded VOC-like RGB scenes; pretraining pool, labelled train, test")
def load(r: LoadRequest) -> ImageDataset:
    # Pool and train scenes are built from Fashion-MNIST's train items, test scenes from its test items.
    items = load_fashion_mnist("test" if r.split == "test" else "train", r.root, r.download)
    return load_fashion_scenes(r.split, r.options, items)


def load_fashion_scenes(split: str, cfg: ScenesConfig, items: ImageDataset) -> ImageDataset:
    """The scenes of `split` ("pool", "train" or "test"), cached on disk. items: Fashion-MNIST train
    items for `pool` and `train` (each takes its own part, see `split_items`), test items for `test`."""
    if split not in SPLITS:
        raise UserError(f"fashion_scenes has splits {', '.join(SPLITS)}, not {split!r}.")
    part = split_items(split, cfg, len(items))
    images, labels = items.images[part], items.labels[part]
    fingerprint = hashlib.sha1(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:12]
    # The other splits' sizes are left out of the key: changing one split does not redraw the others.
    fields = {k: v for k, v in asdict(cfg).items() if not k.endswith("_scenes")}
    key_fields = {**fields, "scenes": cfg.scenes(split), "version": GENERATOR_VERSION, "items": fingerprint}
    key = hashlib.sha1(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root() / "fashion_scenes" / key / f"{split}.pt"
    data = load_verified(path, lambda p: torch.load(p, weights_only=True), "FashionScenes cache entry")
    if data is None:  # missing, or damaged and removed with a warning: generate it again
        data = make_scenes(images, labels, cfg.scenes(split), cfg, cfg.seed + SPLIT_OFFSET[split])
        save_verified(path, lambda f: torch.save(data, f))
        atomic_write_text(path.parent / "config.json", json.dumps({**key_fields, "split": split}, indent=1))
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


def silhouettes(item_images: torch.Tensor) -> torch.Tensor:
    """uint8 (M, 1, H, W) -> bool (M, 1, H, W): the opaque pixels (grey >= SOLID_GRAY) with their holes
    filled, a hole being a 4-connected region of faint pixels that does not reach the item's border.

    Without the filling, dark pixels inside patterned items (a dress's print) would turn
    transparent and their labels would be a speckle of ignore inside the item.
    """
    solid = item_images.float() / 255 >= SOLID_GRAY
    outside = ~solid
    reach = torch.zeros_like(solid)  # faint pixels connected to the border, grown one step at a time
    reach[..., 0, :], reach[..., -1, :], reach[..., :, 0], reach[..., :, -1] = (outside[..., 0, :], outside[..., -1, :],
                                                                              outside[..., :, 0], outside[..., :, -1])
    while True:
        grown = reach.clone()
        grown[..., 1:, :] |= reach[..., :-1, :]
        grown[..., :-1, :] |= reach[..., 1:, :]
        grown[..., :, 1:] |= reach[..., :, :-1]
        grown[..., :, :-1] |= reach[..., :, 1:]
        grown &= outside
        if torch.equal(grown, reach):
            return ~reach
        reach = grown


def make_scenes(item_images: torch.Tensor, item_labels: torch.Tensor, count: int, cfg: ScenesConfig,
                seed: int) -> dict[str, torch.Tensor]:
    """item_images: uint8 (M, 1, 28, 28), item_labels: (M,) -> {images uint8 (count, 3, S, S),
    labels float32 (count, 10), class_maps uint8 (count, S, S), boxes int16 (count, max_items, 5)}.

    A box row is (class, x0, y0, x1, y1), inclusive; unused rows are -1.
    """
    gen = torch.Generator().manual_seed(seed)
    size = cfg.size
    gray, solid = item_images.float() / 255, silhouettes(item_images).float()
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
                placed = place_item(canvas, owner, fringe, gray[idx], solid[idx], len(classes), cfg, gen)
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


def place_item(canvas: torch.Tensor, owner: torch.Tensor, fringe: torch.Tensor, gray: torch.Tensor, solid: torch.Tensor,
               index: int, cfg: ScenesConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paint one item (grey level in [0, 1] and its filled silhouette in {0, 1}, each (1, 28, 28))
    at a random scale, place and tint; returns new copies of canvas (3, S, S), owner (S, S) and fringe (S, S)."""
    size = cfg.size
    side = int(round(size * (cfg.min_scale + (cfg.max_scale - cfg.min_scale) * float(torch.rand(1, generator=gen)))))
    side = max(8, min(side, size))
    top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=gen))
    tint = 0.1 + 0.9 * torch.rand(3, 1, 1, generator=gen)
    gray, solid = F.interpolate(torch.stack([gray, solid]), size=(side, side), mode="bilinear",
                                antialias=True, align_corners=False)  # each (1, side, side) in [0, 1]
    # Opaque inside the silhouette; outside it faint pixels fade in (the soft fringe). The item's
    # own shading modulates its tint.
    alpha = torch.where(solid >= 0.5, 1.0, ((gray - 0.05) / 0.25).clamp(0, 1))
    colour = tint * (0.35 + 0.65 * gray)
    canvas, owner, fringe = canvas.clone(), owner.clone(), fringe.clone()
    window = (slice(top, top + side), slice(left, left + side))
    canvas[:, window[0], window[1]] = alpha * colour + (1 - alpha) * canvas[:, window[0], window[1]]
    solid, soft = alpha[0] >= 0.5, (alpha[0] > 0.1) & (alpha[0] < 0.5)
    owner[window][solid] = index
    fringe[window][solid] = False
    fringe[window][soft] = True
    return canvas, owner, fringe
