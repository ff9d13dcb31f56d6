"""Classical lossless codecs on the same images as an ARDM: PNG (optimize, level 9) and WebP
lossless (method 6) through Pillow, each image as its own file, as the paper compares per image."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

CODECS: dict[str, dict[str, Any]] = {
    "PNG": {"format": "PNG", "optimize": True, "compress_level": 9},
    "WebP-lossless": {"format": "WEBP", "lossless": True, "quality": 100, "method": 6},
}


def to_pil(hwc: np.ndarray) -> Image.Image:
    """A uint8 (H, W, C) image with C = 1 or 3 as a Pillow image (L or RGB)."""
    return Image.fromarray(hwc[..., 0] if hwc.shape[-1] == 1 else hwc)


def encode(image: np.ndarray, codec: str) -> bytes:
    """One uint8 (C, H, W) image (C = 1 or 3) as a file of `codec` (a key of CODECS)."""
    buffer = io.BytesIO()
    to_pil(image.transpose(1, 2, 0)).save(buffer, **CODECS[codec])
    return buffer.getvalue()


def baseline_bpd(images: np.ndarray) -> dict[str, float]:
    """Mean file size in bits per dimension of each codec, every uint8 image (N, C, H, W) coded
    as its own file (header included); {} when the images have neither 1 nor 3 channels."""
    if images.shape[1] not in (1, 3):
        return {}
    d = images[0].size
    return {codec: 8 * sum(len(encode(image, codec)) for image in images) / (len(images) * d) for codec in CODECS}
