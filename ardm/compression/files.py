"""Image files for the compress / decompress commands: PNG and .npy, in and out.

A file holds one image or a batch; `read_images` returns them as uint8 (N, C, H, W) with the
layout they came in, which the compressed file stores so that `write_images` can give back the
same array (or PNG pixels):
    png    one PNG image (L -> C=1, RGB and palette -> C=3, RGBA -> C=4, 1-bit -> C=1 with 0/1)
    hw     .npy (H, W), one single-channel image
    chw    .npy (C, H, W);   hwc  .npy (H, W, C)
    nchw   .npy (N, C, H, W); nhwc .npy (N, H, W, C)
.npy layouts are recognised by matching the model's (C, H, W); channels first wins a tie.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ardm.data import DataError
from ardm.data.arrays import _png_header, _read_png
from ardm.data.dataset import check_values

SUFFIXES = (".png", ".npy")
LAYOUTS = ("png", "hw", "chw", "hwc", "nchw", "nhwc")


def from_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """The images of an array stored as `layout`, as (N, C, H, W)."""
    if layout == "hw":
        return array[None, None]
    if layout == "chw":
        return array[None]
    if layout in ("hwc", "png"):
        return array.transpose(2, 0, 1)[None]
    return array.transpose(0, 3, 1, 2) if layout == "nhwc" else array


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """Images (N, C, H, W) as the array `layout` stores them (single-image layouts need N = 1)."""
    if layout == "hw":
        return images[0, 0]
    if layout == "chw":
        return images[0]
    if layout in ("hwc", "png"):
        return images[0].transpose(1, 2, 0)
    return images.transpose(0, 2, 3, 1) if layout == "nhwc" else images


def is_image_file(path: str | Path) -> bool:
    """True for an existing .png or .npy file (anything else is taken as a dataset spec)."""
    return Path(path).suffix.lower() in SUFFIXES and Path(path).is_file()


def _npy_layout(shape: tuple[int, ...], model_shape: tuple[int, int, int]) -> str | None:
    """The layout whose image shape matches the model's (C, H, W), channels first on a tie; else None."""
    c, h, w = model_shape
    image_shape = tuple(shape[1:]) if len(shape) == 4 else tuple(shape)
    candidates = {2: [("hw", (1, h, w))], 3: [("chw", (c, h, w)), ("hwc", (h, w, c))],
                  4: [("nchw", (c, h, w)), ("nhwc", (h, w, c))]}.get(len(shape), [])
    return next((layout for layout, expected in candidates
                 if image_shape == expected[-len(image_shape):] and (layout != "hw" or c == 1)), None)


def read_images(path: str | Path, model_shape: tuple[int, int, int], num_classes: int) -> tuple[np.ndarray, str]:
    """Images of a .png or .npy file as uint8 (N, C, H, W) and their layout; DataError names the
    file when it is unreadable, not uint8, of another shape than the model's, or has values >= K."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        _png_header(path)
        images, layout = _read_png(path, num_classes)[None], "png"
    else:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npy file ({err})") from err
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            raise DataError(f"{path}: expected a uint8 .npy array, got {getattr(array, 'dtype', type(array))}")
        layout = _npy_layout(array.shape, model_shape)
        if layout is None:
            raise DataError(f"{path}: shape {array.shape} does not hold images of the model's shape (C, H, W) = "
                            f"{model_shape}")
        check_values(array, num_classes, str(path))  # reports the index in the file's own layout
        images = from_layout(array, layout)
    if images.shape[1:] != tuple(model_shape):
        raise DataError(f"{path}: image shape {images.shape[1:]} differs from the model's {model_shape}")
    return np.ascontiguousarray(images), layout


def write_images(path: str | Path, images: np.ndarray, layout: str) -> Path:
    """Write uint8 images (N, C, H, W) as `layout` to a .png (one image of 1, 3 or 4 channels) or .npy
    file; values are written as they are (no rescaling), so reading the file back is bit-exact."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        n, c = images.shape[:2]
        if n != 1 or c not in (1, 3, 4):
            raise DataError(f"{path}: a PNG holds one image of 1, 3 or 4 channels, not {n} of {c}; write .npy")
        pixels = to_layout(images, "hwc")
        Image.fromarray(pixels[..., 0] if c == 1 else pixels).save(path)
    elif path.suffix.lower() == ".npy":
        if layout not in ("nchw", "nhwc") and len(images) != 1:
            layout = "nchw"  # a batch cannot take a single-image layout
        np.save(path, np.ascontiguousarray(to_layout(images, layout)))
    else:
        raise DataError(f"{path}: output must end in .png or .npy")
    return path
