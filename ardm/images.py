"""PNG grids of samples, titled, with a row of real images to compare against."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

REFERENCE_LABEL = "real test images"


def to_display(images: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """Map values 0..K-1 of uint8 (N, C, H, W) to 8-bit intensities 0..255, (N, H, W, C)."""
    x = np.asarray(images, dtype=np.int64)
    scaled = x * 255 // max(num_classes - 1, 1)
    return scaled.astype(np.uint8).transpose(0, 2, 3, 1)


def full_grid(count: int) -> tuple[int, int]:
    """(images, columns) of the smallest full grid of at least `count` images: ceil(sqrt(count))
    columns, as many rows as needed, every cell filled (10 -> (12, 4): 4 x 3)."""
    columns = math.ceil(math.sqrt(max(count, 1)))
    return columns * math.ceil(max(count, 1) / columns), columns


def _tile_rows(tiles: np.ndarray, columns: int, pad: int) -> np.ndarray:
    """(rows*(h+pad)+pad, columns*(w+pad)+pad, c) white canvas with the (n, h, w, c) tiles in row order."""
    n, h, w, c = tiles.shape
    rows = math.ceil(n / columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = tiles[i]
    return grid


def save_grid(
    images: np.ndarray | torch.Tensor, num_classes: int, path: str | Path, *, title: str | None = None,
    reference: np.ndarray | torch.Tensor | None = None, columns: int | None = None, min_tile: int = 64, pad: int = 2,
) -> Path:
    """Write images (N, C, H, W) with values in 0..K-1 as one PNG grid.

    title: a line of text above the grid (what the images are: model, budget, policy).
    reference: real images (M, C, H, W) drawn as one more row below the samples, after a gap and
    under the label REFERENCE_LABEL, so samples can be judged against data; at most `columns` used.
    C must be 1 (grey) or 3 (RGB). Small images are enlarged by an integer factor (nearest
    neighbour, so pixels stay visible) until a tile is at least `min_tile` pixels wide. Columns
    default to ceil(sqrt(N)) (full_grid).
    """
    tiles = to_display(images, num_classes)
    _, h, w, c = tiles.shape
    if c not in (1, 3):
        raise ValueError(f"save_grid needs 1 or 3 channels, got {c}")
    scale = max(1, math.ceil(min_tile / w))
    columns = columns or math.ceil(math.sqrt(len(tiles)))

    def enlarged(x: np.ndarray) -> np.ndarray:
        return x.repeat(scale, axis=1).repeat(scale, axis=2)

    font = ImageFont.load_default()
    line = font.getbbox("Ag")[3] + 2 * pad  # the height of one line of text with its margins
    blocks = [("text", title)] if title else []
    blocks.append(("tiles", _tile_rows(enlarged(tiles), columns, pad)))
    if reference is not None and len(reference):
        blocks += [("text", REFERENCE_LABEL),
                   ("tiles", _tile_rows(enlarged(to_display(reference[:columns], num_classes)), columns, pad))]
    width = max([b.shape[1] for kind, b in blocks if kind == "tiles"]
                + [int(font.getlength(b)) + 2 * pad for kind, b in blocks if kind == "text"])
    height = sum(b.shape[0] if kind == "tiles" else line for kind, b in blocks)
    canvas = Image.new("RGB", (width, height), "white")
    draw, top = ImageDraw.Draw(canvas), 0
    for kind, block in blocks:
        if kind == "text":
            draw.text((pad, top + pad), block, fill="black", font=font)
            top += line
        else:
            canvas.paste(Image.fromarray(block[..., 0] if c == 1 else block), (0, top))
            top += block.shape[0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (canvas.convert("L") if c == 1 else canvas).save(path)
    return path
