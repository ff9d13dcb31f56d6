"""text8 from a local copy of the official archive (http://mattmahoney.net/dc/text8.zip).

Format: `text8.zip` holds one member, `text8`: 100,000,000 characters of cleaned English Wikipedia
on one line, a-z and space only, no line break. The standard split (as in D3PM and the ARDM paper) is
the first 90M characters for training, the next 5M for validation and the last 5M for testing; an
archive of another size is split in the same proportions. Each split is cut into sequences of
`length` characters (the paper: 250), the rest dropped. Nothing here downloads: ardm.data.download
fetches the archive.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ardm.data.dataset import DataError, ImageDataset, check_split
from ardm.data.download import SOURCES, file_md5
from ardm.data.text import DEFAULT_LENGTH, encode_text, text_dataset, to_sequences

ARCHIVE_NAME = SOURCES["text8"].name
MEMBER = "text8"
# Fractions of the characters before the start and at the end of each split: 90M / 5M (valid) / 5M of 100M.
SPLIT_BOUNDS = {"train": (0.0, 0.9), "test": (0.95, 1.0)}


def locate_text8(path: Path) -> Path:
    """The archive that `path` names: the file itself, or text8.zip inside a folder."""
    if path.is_dir():
        path = path / ARCHIVE_NAME
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path


def read_text8(path: str | Path, md5: str | None = SOURCES["text8"].md5) -> np.ndarray:
    """The codes (uint8 (n,), 0..26) of every character of the archive's `text8` member.

    md5: the archive's expected md5 (the official one by default); None skips the check.
    """
    path = locate_text8(Path(path))
    if md5 is not None:
        actual = file_md5(path)
        if actual != md5.lower():
            raise DataError(f"{path}: md5 mismatch (expected {md5.lower()}, got {actual})")
    try:
        with zipfile.ZipFile(path) as archive:
            raw = archive.read(MEMBER)
    except KeyError as exc:
        raise DataError(f"{path}: archive lacks the member {MEMBER!r}") from exc
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable zip archive ({type(exc).__name__}: {exc})") from exc
    # Bytes outside ASCII become lone surrogates, so the error names the offending byte at its offset.
    return encode_text(raw.decode("ascii", errors="surrogateescape"), f"{path}: {MEMBER}")


def load_text8(
    path: str | Path, split: str, length: int = DEFAULT_LENGTH, md5: str | None = SOURCES["text8"].md5
) -> ImageDataset:
    """A text8 split as sequences uint8 (N, 1, 1, length), K = 27, modality "text" (see the module docstring).

    With the official archive and length 250: 360,000 training and 20,000 test sequences.
    """
    name = f"text8:{path}"
    check_split(split, name)
    codes = read_text8(path, md5)
    lo, hi = (round(bound * len(codes)) for bound in SPLIT_BOUNDS[split])
    return text_dataset(to_sequences(codes[lo:hi], length), name)
