"""A split's encoder inputs, converted batch by batch on the device that runs the encoder.

Converting a whole split to float at the input size costs 4 bytes per pixel and channel: 618 KB
per 227 px RGB image, 31 GB for 50,000 images, while the stored uint8 images (memory-mapped for
the large datasets) cost a quarter of that and need not be resident. `ModelInputs` keeps the
uint8 images and converts only the batch an evaluator asks for, so evaluation's memory follows
the batch and the feature matrices, not the split's pixels. A batch of a memory-mapped split is
read from its file (`ctxenc.data.cache.read_rows`), so the pages it touched do not stay resident.
"""

from __future__ import annotations

import torch

from ctxenc.data.cache import read_rows
from ctxenc.data.transforms import to_model_input


class ModelInputs:
    """Stands, for the evaluators, where the float tensor `to_model_input(pixels, size)` would,
    (N, C, S, S) in [-1, 1], without ever holding it.

    pixels: uint8 (N, C, h, w), as stored (in memory or memory-mapped); size: S.
    `x[index]` selects images, still uint8: a slice is a view, an index tensor (int or bool)
    reads its images into memory;
    `x[index].to(device)` sends those pixels to `device` (a quarter of the float bytes) and
    converts them there: float32 (B, C, S, S) in [-1, 1], the values `to_model_input` gives.
    Evaluators index and send batches alike whether they are handed this or a float tensor.
    """

    def __init__(self, pixels: torch.Tensor, size: int):
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise TypeError(f"ModelInputs holds uint8 (N, C, h, w) images, got {pixels.dtype} {tuple(pixels.shape)}")
        self.pixels, self.size = pixels, size

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> torch.Size:
        """(N, C, S, S): the shape of the converted split."""
        return torch.Size((len(self.pixels), self.pixels.shape[1], self.size, self.size))

    def __getitem__(self, index: slice | torch.Tensor) -> ModelInputs:
        if isinstance(index, int):
            raise TypeError("index ModelInputs with a slice or an index tensor: a batch keeps its batch dimension")
        if isinstance(index, slice):
            return ModelInputs(self.pixels[index], self.size)
        rows = torch.arange(len(self.pixels))[index]  # bool masks and negative indices, as tensor indexing reads them
        return ModelInputs(read_rows(self.pixels, rows), self.size)

    def to(self, device: torch.device | str) -> torch.Tensor:
        """float32 (B, C, S, S) in [-1, 1] on `device`, converted there."""
        return to_model_input(read_rows(self.pixels).to(device), self.size)

    def __repr__(self) -> str:
        return f"ModelInputs({len(self)} images of {tuple(self.pixels.shape[1:])} -> {self.size} px)"
