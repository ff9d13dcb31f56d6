"""PNG grids of samples or data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_display(images: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """Map values 0..K-1 of uint8 (N, C, H, W) to 8-bit intensities 0..255, (N, H, W, C)."""
    x = np.asarray(images, dtype=np.int64)
    scaled = x * 255 // max(num_classes - 1, 1)
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


def save_grid(
    images: np.ndarray | torch.Tensor, num_classes: int, path: str | Path, columns: int | None = None,
    min_tile: int = 64, pad: int = 2,
) -> Path:
    """Write images (N, C, H, W) with values in 0..K-1 as one PNG grid.

    C must be 1 (grey) or 3 (RGB). Small images are enlarged by an integer factor (nearest
    neighbour, so pixels stay visible) until a tile is at least `min_tile` pixels wide.
    """
    tiles = to_display(images, num_classes)
    n, h, w, c = tiles.shape
    if c not in (1, 3):
        raise ValueError(f"save_grid needs 1 or 3 channels, got {c}")
    scale = max(1, math.ceil(min_tile / w))
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    h, w = h * scale, w * scale
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = tiles[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path)
    return path
