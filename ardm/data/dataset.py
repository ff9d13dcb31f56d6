"""The in-memory image dataset every loader returns, its error type, and the shared train/test split."""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ardm.modality import IMAGE, check_modality

SPLITS = ("train", "test")
# Fixed seed of the deterministic split used by every source that ships without its own train/test split.
SPLIT_SEED = 0
DEFAULT_TEST_FRACTION = 0.1


class DataError(ValueError):
    """A data problem, reported as one line: "<path or dataset name>: <problem>"."""

    def __init__(self, message: str) -> None:
        # Wrapped library errors (pyarrow, pickle) can span lines; logs and CLI output want exactly one.
        super().__init__(" ".join(str(message).split()))


def check_values(images: np.ndarray, num_classes: int, where: str) -> None:
    """Raise DataError if any value of the integer array `images` is >= `num_classes`.

    The message names `where`, the first offending value and its index in `images`' own layout.
    """
    if images.size and int(images.max()) >= num_classes:
        # Only reached on failure, so the full boolean scan for the location costs nothing normally.
        index = tuple(int(i) for i in np.argwhere(images >= num_classes)[0])
        raise DataError(f"{where}: value {int(images[index])} >= K={num_classes} at index {index}")


def check_split(split: str, where: str) -> None:
    """Raise DataError unless `split` is "train" or "test"."""
    if split not in SPLITS:
        raise DataError(f"{where}: unknown split {split!r} (valid: {', '.join(SPLITS)})")


def split_indices(
    num_items: int, split: str, test_fraction: float = DEFAULT_TEST_FRACTION, where: str = "data"
) -> np.ndarray:
    """Sorted int64 indices of `split` in a deterministic train/test split of `num_items` items.

    A numpy Generator seeded with SPLIT_SEED permutes range(num_items); the first
    round(test_fraction * num_items) (at least 1) are the test set, the rest train. The split depends only
    on `num_items` and `test_fraction`, so it is the same on every machine and every run.
    """
    check_split(split, where)
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"{where}: test fraction must be in (0, 1), got {test_fraction}")
    num_test = max(1, round(test_fraction * num_items))
    if num_test >= num_items:
        raise DataError(f"{where}: {num_items} items are too few for a train/test split")
    order = np.random.default_rng(SPLIT_SEED).permutation(num_items)
    chosen = order[:num_test] if split == "test" else order[num_test:]
    return np.sort(chosen)


def spread_indices(num_items: int, count: int, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices of `count` items (0 or >= num_items: all) spread evenly over 0..num_items-1.

    One per stride of num_items / count, at a seeded random offset within the stride: splits are
    often ordered (patches by position in their photo, CIFAR by batch), so the first few items
    would not represent the split. The same (num_items, count, seed) always gives the same indices.
    """
    if not count or count >= num_items:
        return np.arange(num_items, dtype=np.int64)
    offset = np.random.default_rng(seed).random()
    return np.floor((np.arange(count) + offset) * (num_items / count)).astype(np.int64)


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Examples of discrete values for an ARDM, laid out as images: every value is one of K classes.

    images: uint8 array (N, C, H, W), read-only, every value < num_classes. A text dataset holds
      sequences of L characters as (N, 1, 1, L) (ardm.modality).
    num_classes: K, between 2 and 256.
    name: where the data came from (a spec string or path), used in error messages and logs.
    modality: "image" or "text" (ardm.modality): the unit of its likelihood and the files it is read
      from and written to.
    """

    images: np.ndarray
    num_classes: int
    name: str
    modality: str = IMAGE

    def __post_init__(self) -> None:
        images, name = self.images, self.name
        if not isinstance(images, np.ndarray):
            raise DataError(f"{name}: expected a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise DataError(f"{name}: expected a uint8 array, got {images.dtype}")
        if images.ndim != 4:
            raise DataError(f"{name}: expected images shaped (N, C, H, W), got shape {images.shape}")
        if 0 in images.shape:
            raise DataError(f"{name}: empty dataset, shape {images.shape}")
        k = self.num_classes
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= 256:
            raise DataError(f"{name}: K must be an integer between 2 and 256, got {k!r}")
        check_values(images, int(k), name)
        try:
            check_modality(self.modality)
        except ValueError as exc:
            raise DataError(f"{name}: {exc}") from exc
        # A read-only view keeps the dataset immutable without copying or touching the caller's array.
        view = images.view()
        view.flags.writeable = False
        object.__setattr__(self, "images", view)
        object.__setattr__(self, "num_classes", int(k))

    def __repr__(self) -> str:
        # The default dataclass repr would print pixel values; the array's shape says more.
        return (f"ImageDataset(name={self.name!r}, images={self.images.shape}, num_classes={self.num_classes}, "
                f"modality={self.modality!r})")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example ((1, 1, L) for text)."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def subset(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(images (n, C, H, W), their indices (n,)): `count` images (0: all) spread evenly over the
        dataset (spread_indices). Every command that takes a number of images (max_images,
        table_images, order_images) picks them this way."""
        indices = spread_indices(len(self.images), count, seed)
        return self.images[indices], indices

    @property
    def num_variables(self) -> int:
        """D = C * H * W, the number of discrete variables per image."""
        c, h, w = self.shape
        return c * h * w
