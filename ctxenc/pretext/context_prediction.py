"""`context_prediction` (Doersch et al., ICCV 2015): where does a patch lie relative to another?

Each image is cut into a 3x3 grid of square patches with gaps between them, each patch jittered
a few pixels. The centre patch and one of its 8 neighbours (drawn per image) go through the
shared encoder; their pooled last-stage features are concatenated and an MLP classifies the
neighbour's position (8 ways, cross-entropy). The gap and the jitter keep the task from being
solved by continuing lines and textures across patch borders (Doersch et al., Sec. 3).

The grid, scaled from the paper to the encoder's input size S (options left unset):
- the paper cuts 96 px patches with 48 px gaps and up to 7 px of jitter from images of roughly
  400-700 px, so the grid covers most of the image;
- here patch_px = S/4 (8 px at 32 px), and the rest of the side, S - 3 patch_px, goes to the two
  gaps and the jitter in the paper's proportion, 48 : 7 (rounded, at least 1 px of jitter): at
  32 px a 3 px gap and up to 1 px of jitter (so patches are always at least 1 px apart); at
  128 px, 32 px patches, a 14 px gap and 2 px of jitter. Any pixels left over place the grid at
  a random offset.

Patches go through the encoder at their own size, not resized to S: the encoders are fully
convolutional and `Encoder.pooled` averages whatever map comes out, while a patch blown up to S
would teach the first filters on blurred pixels that no evaluation image has. The paper does the
same: its network learns on 96 px patches at the image's resolution, and transfer runs its
convolutional layers on whole images. The small encoder at 32 px maps an 8 px patch to a 1x1
conv3 cell. An encoder whose stages cannot take a patch that small (the dcgan encoder's 4x4
bottleneck, AlexNet at 227 px with 56 px patches) is refused at construction unless
`resize_patches` is set, which scales each patch up to the input size first (bilinear). Centre
and neighbour patches share one encoder pass, so BatchNorm sees both; its running statistics are
those of patches, not of whole images.

Deviations from the paper:
- no counter-measures against chromatic aberration (the paper's colour projection or dropping
  two of three channels for noise) and no pixelation augmentation (the paper downsamples some
  patches to about 100 pixels): the embedded data (Fashion-MNIST, FashionScenes) were never
  through a lens, but on photographs the encoder may learn to read chromatic aberration;
- the paper's late-fusion AlexNet (fc6 per patch, fc7 and fc8 on the pair) becomes the shared
  encoder's pooled features, concatenated, then a two-layer MLP;
- the grid's scale follows the input size as above, not the paper's resizing of each image to
  150k-450k pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ctxenc.errors import UserError
from ctxenc.pretext.base import Pretext, register_pretext

# The 8 neighbours of the centre cell (1, 1) as (row, column), in reading order: label k is
# NEIGHBOURS[k], the paper's numbering (its Fig. 2) minus one.
NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
PAPER_GAP, PAPER_JITTER = 48, 7  # px around 96 px patches


@dataclass(frozen=True)
class ContextPredictionConfig:
    """patch_px: side of each grid patch; gap_px: the gap between neighbouring patches; jitter_px:
    how far each patch may move either way. Unset (None): scaled from the paper to the input size
    (32 px: 8, 3, 1). resize_patches: scale patches up to the encoder's input size (for encoders
    that cannot run on them at their own size)."""

    patch_px: int | None = None
    gap_px: int | None = None
    jitter_px: int | None = None
    resize_patches: bool = False

    def __post_init__(self):
        if self.patch_px is not None and self.patch_px < 1:
            raise UserError(f"patch_px must be at least 1 pixel, got {self.patch_px}.")
        for name in ("gap_px", "jitter_px"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise UserError(f"{name} must be at least 0 pixels, got {getattr(self, name)}.")


@dataclass(frozen=True)
class PatchGrid:
    """A 3x3 grid of `patch` px squares, `gap` px apart, each moved by up to `jitter` px either
    way, inside a `size` px image; `slack` px are left over for a random grid offset."""

    size: int
    patch: int
    gap: int
    jitter: int

    @classmethod
    def for_size(cls, size: int, cfg: ContextPredictionConfig) -> PatchGrid:
        """The grid `cfg` asks for, its unset parts scaled from the paper (module docstring)."""
        patch = cfg.patch_px or size // 4
        room = max(size - 3 * patch, 0) // 2  # per gap, jitter included
        paper_jitter = min(room, max(1, round(room * PAPER_JITTER / (PAPER_GAP + PAPER_JITTER))))
        jitter = cfg.jitter_px if cfg.jitter_px is not None else paper_jitter
        gap = cfg.gap_px if cfg.gap_px is not None else max(room - jitter, 0)
        grid = cls(size, patch, gap, jitter)
        if grid.slack < 0:
            raise UserError(f"a 3x3 grid of {patch} px patches, {gap} px apart with {jitter} px of jitter, needs "
                            f"{size - grid.slack} px, more than the {size} px input; lower patch_px, gap_px or jitter_px.")
        return grid

    @property
    def slack(self) -> int:
        return self.size - 3 * self.patch - 2 * self.gap - 2 * self.jitter

    def sample(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """-> int64 (n, 7) per image: the neighbour's label in 0..7, the centre's and the
        neighbour's jitter (dy, dx each in 0..2 jitter) and the grid offset (oy, ox in 0..slack)."""
        return torch.cat([torch.randint(len(NEIGHBOURS), (n, 1), generator=gen),
                          torch.randint(2 * self.jitter + 1, (n, 4), generator=gen),
                          torch.randint(self.slack + 1, (n, 2), generator=gen)], dim=1)

    def corners(self, draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """draws: (B, 7) from `sample` -> top-left corners (B, 2) as (y, x) of the centre patch and
        of the neighbour patch."""
        step = self.patch + self.gap
        cells = neighbour_cells(draws[:, 0])
        offset = draws[:, 5:7]
        centre = offset + step + draws[:, 1:3]
        neighbour = offset + cells * step + draws[:, 3:5]
        return centre, neighbour


def neighbour_cells(labels: torch.Tensor) -> torch.Tensor:
    """labels: int64 (B,) in 0..7 -> NEIGHBOURS[labels], (B, 2) row and column, computed where the
    labels are (a lookup table would be copied from the host at every step): the cells of the
    3x3 grid in reading order, skipping the centre (cell 4)."""
    cell = labels + (labels >= 4).long()
    return torch.stack([cell // 3, cell % 3], dim=1)


def crop(images: torch.Tensor, corners: torch.Tensor, side: int) -> torch.Tensor:
    """images: (B, C, S, S); corners: int64 (B, 2) top-left (y, x) -> patches (B, C, side, side)."""
    span = torch.arange(side, device=images.device)
    rows = (corners[:, 0:1] + span)[:, :, None]  # (B, side, 1)
    cols = (corners[:, 1:2] + span)[:, None, :]  # (B, 1, side)
    batch = torch.arange(len(images), device=images.device)[:, None, None]
    return images.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, side, side, C) -> (B, C, side, side)


@register_pretext
class ContextPrediction(Pretext):
    """Classify where one patch lies relative to the centre patch, 8 ways (Doersch et al. 2015)."""

    name = "context_prediction"
    Config = ContextPredictionConfig
    loss_name = "cross_entropy"

    def __init__(self, encoder, cfg: ContextPredictionConfig, data):
        super().__init__(encoder, cfg, data)
        self.grid = PatchGrid.for_size(encoder.input_size, cfg)
        width = self.check_patch_size()
        self.head = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.ReLU(True), nn.Linear(2 * width, len(NEIGHBOURS)))

    @torch.no_grad()
    def check_patch_size(self) -> int:
        """Run the encoder once on a patch as it will see them: -> the pooled feature width, or a
        UserError if its stages cannot shrink a patch that small."""
        side = self.encoder.input_size if self.cfg.resize_patches else self.grid.patch
        was_training = self.encoder.training
        self.encoder.eval()
        try:
            features = self.encoder(torch.zeros(1, self.encoder.in_channels, side, side))
        except RuntimeError:
            features = None
        finally:
            self.encoder.train(was_training)
        if features is None or features.shape[-1] == 0 or features.shape[-2] == 0:
            raise UserError(f"the encoder cannot run on the grid's {side} px patches; use -o resize_patches=true, "
                            "a larger --input-size or -o patch_px=N.")
        return features.shape[1]

    def forward(self, centre: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        """centre, neighbour: patches (B, C, P, P) in [-1, 1] -> position logits (B, 8)."""
        patches = torch.cat([centre, neighbour])  # one pass: BatchNorm sees both
        if self.cfg.resize_patches:
            size = self.encoder.input_size
            patches = F.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False)
        pooled = self.encoder.pooled(patches)
        return self.head(torch.cat(pooled.chunk(2), dim=1))  # (B, 2 * num_features)

    def forward_loss(self, images: torch.Tensor, draws: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: (B, C, S, S); draws: int64 (B, 7) from `PatchGrid.sample` -> loss, logits (B, 8), accuracy."""
        centre, neighbour = self.grid.corners(draws)
        logits = self(crop(images, centre, self.grid.patch), crop(images, neighbour, self.grid.patch))
        labels = draws[:, 0]
        loss = F.cross_entropy(logits.float(), labels)
        return {"loss": loss, "logits": logits, "accuracy": (logits.argmax(1) == labels).float().mean()}

    def train_step(self, batch, ctx):
        draws = ctx.draw(self.grid.sample)
        with ctx.autocast():
            out = self.forward_loss(batch["images"], draws)
        ctx.update(out["loss"])
        return {"loss": out["loss"].detach(), "accuracy": out["accuracy"].detach()}
