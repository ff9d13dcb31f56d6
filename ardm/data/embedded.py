"""Small real datasets shipped inside scikit-learn, so experiments and tests run with no download."""

from __future__ import annotations

import functools

import numpy as np

from ardm.data.dataset import DataError, ImageDataset, split_indices

PATCH_SIZES = (8, 16, 32)


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    # Imported here, not at the top: scikit-learn (with SciPy) takes seconds to import, and every Ray
    # worker process imports this package, most of them never reading the embedded data.
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    images.flags.writeable = False  # shared by every caller through the cache
    return images


@functools.lru_cache(maxsize=len(PATCH_SIZES))
def _patches(patch: int) -> np.ndarray:
    # load_sample_images decodes two JPEGs; the cache keeps that to once per process and patch size.
    from sklearn.datasets import load_sample_images  # imported here: see _digits

    parts = []
    for photo in load_sample_images().images:  # china.jpg, flower.jpg: uint8 (427, 640, 3)
        rows, cols = photo.shape[0] // patch, photo.shape[1] // patch
        grid = photo[: rows * patch, : cols * patch].reshape(rows, patch, cols, patch, 3)
        parts.append(grid.transpose(0, 2, 4, 1, 3).reshape(-1, 3, patch, patch))
    images = np.ascontiguousarray(np.concatenate(parts))
    images.flags.writeable = False
    return images


def load_digits_dataset(split: str) -> ImageDataset:
    """scikit-learn's 8x8 handwritten digits: images uint8 (N, 1, 8, 8), values 0..16, K = 17.

    Fixed split of the 1797 images: a numpy Generator seeded with dataset.SPLIT_SEED permutes them and
    10% (180) are the test set, 1617 train; identical on every machine.
    """
    images = _digits()
    return ImageDataset(images[split_indices(len(images), split, where="digits")], 17, "digits")


def load_photo_patches(split: str, patch: int) -> ImageDataset:
    """Non-overlapping RGB patches of scikit-learn's two sample photos: uint8 (N, 3, P, P), K = 256.

    patch: P, one of 8, 16, 32. Patches are cut row by row from the top-left of china.jpg then flower.jpg
    (427x640, remainders dropped): 8480, 2080 or 520 patches. Fixed split: a numpy Generator seeded with
    dataset.SPLIT_SEED permutes the patches and 10% are the test set; identical on every machine. Test
    patches come from the same two photos as train ones, so this is a smoke-test dataset, not a benchmark.
    """
    name = f"photos:{patch}"
    if patch not in PATCH_SIZES:
        raise DataError(f"{name}: patch size must be one of {', '.join(map(str, PATCH_SIZES))}")
    images = _patches(patch)
    return ImageDataset(images[split_indices(len(images), split, where=name)], 256, name)
