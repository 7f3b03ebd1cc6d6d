"""Image figures rendered from tensors: inpainting grids, scenes with their annotations, and
detections beside the true boxes. Nothing here loads data or checkpoints (ctxenc/results/samples.py
does); every function takes tensors and writes one figure with `save_figure`: a PNG and a vector
PDF beside it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ctxenc.results.names import wrap  # noqa: E402

PNG_DPI = 200  # at a paper's column width (3.3 in) a 200 dpi bitmap still prints sharp


def save_figure(fig, out: str | Path) -> Path:
    """Write `fig` to `out` (a .png, at PNG_DPI) and to the same name with .pdf (vector), then close it.

    The PDF embeds TrueType fonts (pdf.fonttype 42): publishers reject the Type 3 fonts matplotlib
    uses by default. Neither file records its creation time, so an unchanged figure redraws
    byte-identical and a committed report shows no spurious diff.
    """
    out = Path(out)
    fig.savefig(out, dpi=PNG_DPI, metadata={"Software": None})
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig.savefig(out.with_suffix(".pdf"), metadata={"CreationDate": None, "Producer": None, "Creator": None})
    plt.close(fig)
    return out


def figure_link(alt: str, png: str | Path) -> str:
    """Markdown showing the PNG, with a link to its vector PDF when one is beside it."""
    png = Path(png)
    pdf = png.with_suffix(".pdf")
    return f"![{alt}]({png.name})" + (f" ([PDF]({pdf.name}))" if pdf.is_file() else "")


def to_display(x: torch.Tensor):
    """(C, H, W) in [-1, 1] -> numpy (H, W) or (H, W, 3) in [0, 1]."""
    img = ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return img[..., 0] if img.shape[2] == 1 else img


def highlight(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """images (N, C, S, S) in [-1, 1], masks (N, 1, S, S) bool -> RGB (N, 3, S, S) with the hidden
    pixels drawn in red, so the hole is visible."""
    rgb = images.expand(-1, 3, -1, -1).clone() if images.shape[1] == 1 else images.clone()
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand_as(rgb)
    return torch.where(masks, red, rgb)


def _hide_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def inpainting_grid(rows: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], out: str | Path) -> Path:
    """rows: (label, masked, masks (N, 1, S, S) bool, completed, original), images (N, C, S, S) in [-1, 1].

    One block of three rows per model: masked input (hole in red), completed output, original.
    """
    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(3 * len(rows), n, figsize=(1.1 * n + 1.5, 1.2 * 3 * len(rows)), squeeze=False)
    for r, (label, masked, masks, completed, original) in enumerate(rows):
        shown = (("masked input", highlight(masked, masks)), ("completed", completed), ("original", original))
        for j, (name, batch) in enumerate(shown):
            for i in range(n):
                axes[3 * r + j, i].imshow(to_display(batch[i]), cmap="gray", vmin=0, vmax=1)
                _hide_ticks(axes[3 * r + j, i])
            axes[3 * r + j, 0].set_ylabel(name if j else f"{wrap(label, 18)}\n{name}", fontsize=7,
                                          rotation=0, ha="right", va="center")
    fig.tight_layout()
    return save_figure(fig, out)


def image_rows(rows: dict[str, torch.Tensor], out: str | Path) -> Path:
    """One row per label, the same N images (N, C, S, S) in [-1, 1] in every row."""
    n = next(iter(rows.values())).shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.0 * n + 1.8, 1.0 * len(rows)), squeeze=False)
    for r, (label, batch) in enumerate(rows.items()):
        for i in range(n):
            axes[r, i].imshow(to_display(batch[i]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            _hide_ticks(axes[r, i])
        axes[r, 0].set_ylabel(wrap(label, 18), fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return save_figure(fig, out)


def _palette(n_classes: int) -> list[tuple]:
    """Background black, then one tab10 colour per class."""
    return [(0, 0, 0)] + [plt.cm.tab10.colors[i % 10] for i in range(n_classes)]


def _draw_box(ax, cls: int, x0, y0, x1, y1, class_names: list[str], color, text: str | None = None,
              dashed: bool = False, inclusive: bool = True) -> None:
    """A box with its class name (and `text`) above it: inclusive pixel corners (the datasets'
    boxes, the last row and column inside the box) or continuous xyxy (a detector's, pixel i
    spanning [i, i + 1))."""
    extra = 1 if inclusive else 0
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + extra, y1 - y0 + extra, fill=False, edgecolor=color,
                           linewidth=1.2, linestyle="--" if dashed else "-"))
    name = class_names[cls] if 0 <= cls < len(class_names) else f"class {cls}"
    ax.text(x0, y0, name + (f" {text}" if text else ""), fontsize=5, color="white", va="bottom",
            bbox={"facecolor": color, "pad": 0.5, "linewidth": 0})


def scenes_figure(images: torch.Tensor, class_maps: torch.Tensor, boxes: torch.Tensor, class_names: list[str],
                  out: str | Path, ignore: int = 255) -> Path:
    """Scenes with their class maps and boxes: images uint8 (N, 3, S, S), class_maps (N, S, S), boxes (N, K, 5).

    Row 1: the scene with its boxes and class names; row 2: the class map (background black,
    ignored pixels white).
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    n = images.shape[0]
    palette = _palette(len(class_names))
    cmap = ListedColormap(palette + [(1, 1, 1)])
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.9), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i].permute(1, 2, 0).numpy())
        for c, x0, y0, x1, y1, *_ in boxes[i].tolist():  # VOC rows add a difficult flag
            if c >= 0:
                _draw_box(axes[0, i], int(c), x0, y0, x1, y1, class_names, palette[int(c) + 1])
        shown = class_maps[i].long().clone()
        shown[shown == ignore] = len(palette)
        axes[1, i].imshow(shown.numpy(), cmap=cmap, vmin=0, vmax=len(palette), interpolation="nearest")
        for ax in axes[:, i]:
            _hide_ticks(ax)
    axes[0, 0].set_ylabel("scene + boxes", fontsize=8)
    axes[1, 0].set_ylabel("class map", fontsize=8)
    handles = [Patch(color=palette[k + 1], label=name) for k, name in enumerate(class_names)]
    handles += [Patch(color="black", label="background"), Patch(facecolor="white", edgecolor="grey", label="ignore")]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save_figure(fig, out)


def detections_figure(images: torch.Tensor, true_boxes: torch.Tensor, predictions: dict[str, dict],
                      class_names: list[str], out: str | Path, min_score: float = 0.5) -> Path:
    """Test scenes with true boxes (top row, dashed) and, one row per method, its predicted boxes
    with score >= `min_score` (solid, class and score above each).

    images: uint8 (N, 3, S, S); true_boxes: (N, K, 5) (class, x0, y0, x1, y1), class -1 = padding;
    predictions: {method: {boxes: [(n, 4) xyxy], labels: [(n,)], scores: [(n,)]}}, one list entry
    per image, for the first images (a method with fewer shows blanks).
    """
    palette = _palette(len(class_names))
    n = images.shape[0]
    rows = ["true boxes", *predictions]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.5 * n + 1.2, 1.55 * len(rows)), squeeze=False)
    for r, label in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            _hide_ticks(ax)
            ax.imshow(images[i].permute(1, 2, 0).numpy())
            if r == 0:
                for c, x0, y0, x1, y1, *_ in true_boxes[i].tolist():  # VOC rows add a difficult flag
                    if c >= 0:
                        _draw_box(ax, int(c), x0, y0, x1, y1, class_names, palette[int(c) + 1], dashed=True)
                continue
            found = predictions[label]
            if i >= len(found["boxes"]):
                ax.set_facecolor("white")
                continue
            for box, cls, score in zip(found["boxes"][i].tolist(), found["labels"][i].tolist(), found["scores"][i].tolist()):
                if score >= min_score:
                    _draw_box(ax, int(cls), *box, class_names, palette[int(cls) + 1 if 0 <= cls < len(class_names) else 0],
                              text=f"{score:.2f}", inclusive=False)
        axes[r, 0].set_ylabel(wrap(label, 18), fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"true boxes (dashed) and predictions with score ≥ {min_score:g} (first seed)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)
