"""The user's own images: uint8 .npy / .npz arrays, or a folder of PNG files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ardm.data.dataset import DEFAULT_TEST_FRACTION, DataError, ImageDataset, check_values, split_indices

LAYOUTS = ("nchw", "nhwc")
CHANNEL_SIZES = (1, 3, 4)
UINT8_CLASSES = 256  # K of uint8 data unless the spec's ?k= says otherwise
# PNG mode -> (channels, K). Palette images are converted to RGB; "1" is 1-bit black/white, read as 0/1.
PNG_MODES = {"1": (1, 2), "L": (1, 256), "P": (3, 256), "RGB": (3, 256), "RGBA": (4, 256)}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _resolve_layout(array: np.ndarray, layout: str | None, where: str) -> str:
    """Check dtype and rank; return "nhw", "nchw" or "nhwc"."""
    if array.dtype != np.uint8:
        raise DataError(f"{where}: expected a uint8 array, got {array.dtype}")
    if array.ndim == 3:
        return "nhw"
    if array.ndim != 4:
        raise DataError(f"{where}: expected shape (N, C, H, W), (N, H, W, C) or (N, H, W), got {array.shape}")
    if layout is not None:
        if layout not in LAYOUTS:
            raise DataError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        return layout
    first, last = array.shape[1] in CHANNEL_SIZES, array.shape[3] in CHANNEL_SIZES
    if first == last:
        raise DataError(
            f"{where}: cannot tell NCHW from NHWC for shape {array.shape}; pass layout=nchw or layout=nhwc"
        )
    return "nchw" if first else "nhwc"


def _as_nchw(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "nhw":
        return array[:, None]
    if layout == "nhwc":
        return array.transpose(0, 3, 1, 2)
    return array


def _from_arrays(
    arrays: dict[str, np.ndarray],
    split: str,
    num_classes: int | None,
    layout: str | None,
    test_fraction: float,
    path: Path,
    name: str,
) -> ImageDataset:
    """Shared by .npy and .npz: `arrays` maps "train"/"test" to their arrays, or "all" to one to split."""
    wheres = {key: str(path) if key == "all" else f"{path}: array {key!r}" for key in arrays}
    layouts = {key: _resolve_layout(array, layout, wheres[key]) for key, array in arrays.items()}
    # Not inferred from the largest value: photos whose brightest pixel is 254 are still 8-bit data, and a
    # K that depends on the pixels would make a model refuse the next file of the same kind.
    k = num_classes if num_classes is not None else UINT8_CLASSES
    for key, array in arrays.items():
        check_values(array, k, wheres[key])  # reports the index in the file's own layout
    key = split if split in arrays else "all"
    array = arrays[key]
    chosen = array if key != "all" else array[split_indices(len(array), split, test_fraction, str(path))]
    return ImageDataset(np.ascontiguousarray(_as_nchw(chosen, layouts[key])), k, name)


def load_npy(
    path: str | Path,
    split: str,
    num_classes: int | None = None,
    layout: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> ImageDataset:
    """Images from a .npy uint8 array: (N, C, H, W), (N, H, W, C) or (N, H, W) (one channel).

    Returns uint8 (N, C, H, W). The layout is detected when exactly one of axis 1 and axis 3 has size 1, 3
    or 4; otherwise pass layout="nchw" or "nhwc". K is `num_classes`, or else 256 (any uint8 value). The
    split is deterministic (see dataset.split_indices) with `test_fraction` test items.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        # Memory-mapped: only the requested split is copied into memory.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
    if not isinstance(array, np.ndarray):  # np.load also opens .npz archives
        raise DataError(f"{path}: not a .npy file (use npz: for .npz archives)")
    return _from_arrays({"all": array}, split, num_classes, layout, test_fraction, path, f"npy:{path}")


def load_npz(
    path: str | Path,
    split: str,
    num_classes: int | None = None,
    layout: str | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> ImageDataset:
    """Images from a .npz: arrays "train" and "test" are the splits; else array "x" or the only array is
    split deterministically with `test_fraction` test items. Shapes, layout and K as in load_npy. Returns
    uint8 (N, C, H, W).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = npz.files
            if {"train", "test"} <= set(keys):
                arrays = {"train": npz["train"], "test": npz["test"]}
            elif "x" in keys or len(keys) == 1:
                arrays = {"all": npz["x" if "x" in keys else keys[0]]}
            else:
                raise DataError(f"{path}: expected arrays 'train' and 'test', 'x', or one array; got {keys}")
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
    return _from_arrays(arrays, split, num_classes, layout, test_fraction, path, f"npz:{path}")


def _png_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) of a PNG without decoding it; rejects what this loader cannot represent."""
    with path.open("rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != PNG_SIGNATURE:
        raise DataError(f"{path}: not a PNG file")
    # IHDR byte 24 is the bit depth; Pillow silently reduces 16-bit RGB to 8 bits, so check the file itself.
    if head[24] == 16:
        raise DataError(f"{path}: 16-bit PNG is not supported (K must be at most 256); save it as 8-bit")
    try:
        with Image.open(path) as image:
            mode, size = image.mode, image.size
    except OSError as exc:  # includes PIL.UnidentifiedImageError
        raise DataError(f"{path}: not a readable PNG ({exc})") from exc
    if mode not in PNG_MODES:
        raise DataError(f"{path}: unsupported PNG mode {mode} (supported: {', '.join(PNG_MODES)})")
    return mode, size


def _read_png(path: Path, num_classes: int) -> np.ndarray:
    """One PNG as uint8 (C, H, W)."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB") if image.mode == "P" else image)
    except OSError as exc:  # truncated or corrupt pixel data
        raise DataError(f"{path}: not a readable PNG ({exc})") from exc
    pixels = pixels.astype(np.uint8)  # mode "1" reads as bool
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    check_values(chw, num_classes, str(path))
    return chw


def load_png_folder(
    path: str | Path,
    split: str,
    num_classes: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> ImageDataset:
    """Images from a folder of same-size, same-mode 8-bit PNGs (other files are ignored).

    Returns uint8 (N, C, H, W) in sorted file name order: mode L -> C=1, RGB and palette (P) -> C=3,
    RGBA -> C=4, 1-bit ("1") -> C=1 with values 0/1. K is `num_classes`, else 2 for mode "1" and 256 for
    the others. The split over the sorted files is deterministic with `test_fraction` test items.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not files:
        raise DataError(f"{folder}: no .png files")
    # Headers only, for every file: both splits must agree on size and mode, whichever one is loaded.
    mode, size = _png_header(files[0])
    for file in files[1:]:
        other_mode, other_size = _png_header(file)
        if (other_mode, other_size) != (mode, size):
            raise DataError(
                f"{file}: mode {other_mode} size {other_size[0]}x{other_size[1]} differs from "
                f"mode {mode} size {size[0]}x{size[1]} of {files[0].name}"
            )
    k = num_classes if num_classes is not None else PNG_MODES[mode][1]
    chosen = split_indices(len(files), split, test_fraction, str(folder))
    images = np.stack([_read_png(files[i], k) for i in chosen])
    return ImageDataset(images, k, f"png:{folder}")
