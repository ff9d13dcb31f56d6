"""Samples as files in the form of their modality: a PNG grid for images, a text file for text, one
sample per line (its L characters in the text8 alphabet, ardm.data.text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ardm.data.text import decode_text
from ardm.images import save_grid
from ardm.modality import IMAGE, TEXT, check_modality
from ardm.model import ModelSpec
from ardm.storage import filesystem, write_atomic

_SUFFIXES = {IMAGE: ".png", TEXT: ".txt"}


def sample_suffix(modality: str) -> str:
    """The file suffix samples of `modality` are written with: ".png" (image) or ".txt" (text)."""
    return _SUFFIXES[check_modality(modality)]


def text_lines(sequences: np.ndarray | torch.Tensor) -> list[str]:
    """One string of L characters per sequence of codes (N, 1, 1, L)."""
    return [decode_text(row) for row in np.asarray(sequences)]


def save_samples(
    samples: np.ndarray | torch.Tensor, spec: ModelSpec, path: str | Path, *, title: str | None = None,
    reference: np.ndarray | torch.Tensor | None = None,
) -> Path:
    """Write samples (N, C, H, W) of a model with `spec` to `path` (its suffix: sample_suffix): an image
    model's as a titled PNG grid (ardm.images.save_grid) with the `reference` images as a row below; a
    text model's one per line and nothing else (no title, no reference), so the file is its samples."""
    path = Path(path)
    if spec.modality != TEXT:
        return save_grid(samples, spec.num_classes, path, title=title, reference=reference)
    write_atomic(*filesystem(str(path)), "".join(f"{line}\n" for line in text_lines(samples)).encode("ascii"))
    return path
