"""CIFAR-10 from a local copy of the official python archive (https://www.cs.toronto.edu/~kriz/cifar.html).

Format: `cifar-10-python.tar.gz` holds `cifar-10-batches-py/data_batch_1` .. `data_batch_5` (train, 50000
images) and `test_batch` (10000). Each is a pickled dict whose b"data" is a uint8 array (n, 3072): one image
per row, 32x32 red plane, then green, then blue (CHW order); b"labels" holds the class ids, which an
unconditional ARDM does not use. Nothing here downloads: ardm.data.download fetches the archive.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from ardm.data.dataset import DataError, ImageDataset, check_split

CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
# Published hashes of the extracted batch files, for copies that were unpacked before they reached us.
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SPLIT_BATCHES = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
}
IMAGE_SHAPE = (3, 32, 32)
ROW_SIZE = 3 * 32 * 32


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that only builds what a CIFAR batch contains (dicts, lists, bytes, numpy arrays).

    Refusing every other global means an unverified file (verify=False) cannot run code when loaded.
    """

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(path: Path, expected: str) -> None:
    actual = _md5(path)
    if actual != expected.lower():
        raise DataError(f"{path}: md5 mismatch (expected {expected}, got {actual})")


def _read_batch(handle: IO[bytes], where: str) -> np.ndarray:
    """The b"data" array (n, 3072) uint8 of one pickled batch."""
    try:
        batch = _BatchUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # a corrupt pickle can fail with almost any exception type
        raise DataError(f"{where}: not a readable CIFAR batch pickle ({type(exc).__name__}: {exc})") from exc
    data = batch.get(b"data") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (ROW_SIZE,):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: expected b'data' as a uint8 array (n, {ROW_SIZE}), got {found}")
    return data


def _read_archive(path: Path, names: tuple[str, ...]) -> list[np.ndarray]:
    wanted = {f"{FOLDER_NAME}/{name}": name for name in names}
    found: dict[str, np.ndarray] = {}
    try:
        # Stream mode ("r|gz") reads the archive once front to back; random access would re-decompress it.
        with tarfile.open(path, "r|gz") as tar:
            for member in tar:
                if member.name in wanted:
                    name = wanted[member.name]
                    found[name] = _read_batch(tar.extractfile(member), f"{path}: {member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar.gz archive ({type(exc).__name__}: {exc})") from exc
    missing = [member for member, name in wanted.items() if name not in found]
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return [found[name] for name in names]


def _read_folder(folder: Path, names: tuple[str, ...], verify: bool) -> list[np.ndarray]:
    batches = []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if verify:
            _check_md5(path, BATCH_MD5[name])
        with path.open("rb") as handle:
            batches.append(_read_batch(handle, str(path)))
    return batches


def locate(path: Path) -> Path:
    """The archive file or the extracted batch folder that `path` points to."""
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path / FOLDER_NAME, path):
            if (candidate / "data_batch_1").is_file() or (candidate / "test_batch").is_file():
                return candidate
        if (path / ARCHIVE_NAME).is_file():
            return path / ARCHIVE_NAME
        raise DataError(f"{path}: holds neither {ARCHIVE_NAME} nor a {FOLDER_NAME}/ folder")
    raise DataError(f"{path}: no such file or directory")


def load_cifar10(
    path: str | Path, split: str, md5: str | None = CIFAR10_MD5, verify: bool = True
) -> ImageDataset:
    """Load a CIFAR-10 split: images uint8 (N, 3, 32, 32), K = 256.

    path: the `cifar-10-python.tar.gz` archive (read in memory, never extracted), an extracted
      `cifar-10-batches-py/` folder, or a folder holding either.
    split: "train" (data_batch_1..5 concatenated in order, N = 50000) or "test" (test_batch, N = 10000).
    md5: expected md5 of the archive; pass your own archive's hash, or None to skip the check. It does not
      apply to an extracted folder, whose batch files are checked against the published per-file md5s.
    verify: False skips all hash checks.
    """
    check_split(split, f"cifar10:{path}")
    source = locate(Path(path))
    names = SPLIT_BATCHES[split]
    if source.is_dir():
        batches = _read_folder(source, names, verify)
    else:
        if verify and md5 is not None:
            _check_md5(source, md5)
        batches = _read_archive(source, names)
    images = np.concatenate(batches).reshape(-1, *IMAGE_SHAPE)
    return ImageDataset(images, 256, f"cifar10:{path}")


def write_cifar10_archive(path: str | Path, train: np.ndarray, test: np.ndarray) -> str:
    """Write `train` and `test` (uint8 (N, 3, 32, 32)) as a `cifar-10-python.tar.gz`-style archive.

    Train is cut into the five data batches in order (np.array_split), test is test_batch; labels are
    written as 0. Returns the archive's md5 (hex), to pass to load_cifar10.
    """
    for split, images in (("train", train), ("test", test)):
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE or len(images) == 0:
            found = f"{images.dtype} {images.shape}"
            raise DataError(f"{path}: {split} must be uint8 (N>0, 3, 32, 32), got {found}")
    batches = [*np.array_split(train, len(SPLIT_BATCHES["train"])), test]
    names = [*SPLIT_BATCHES["train"], *SPLIT_BATCHES["test"]]
    with tarfile.open(path, "w:gz") as tar:
        for name, images in zip(names, batches, strict=True):
            batch = {
                b"batch_label": name.encode(),
                b"labels": [0] * len(images),
                b"data": np.ascontiguousarray(images.reshape(len(images), ROW_SIZE)),
            }
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{FOLDER_NAME}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return _md5(Path(path))
