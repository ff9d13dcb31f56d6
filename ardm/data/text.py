"""Text as ARDM data: the text8 alphabet, normalisation, strict encoding, and plain-text files.

The alphabet is text8's: space and the 26 lower-case letters, K = 27, coded as space = 0 and
a..z = 1..26. A sequence of L characters is one example of shape (1, 1, L) (ardm.modality), so a text
dataset is an ImageDataset of uint8 (N, 1, 1, L) with modality "text".

    txt:<file or folder>?length=L&test=F    a plain-text file, or every *.txt file under a folder
                                            (sorted by path), normalised and joined by one space
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ardm.data.dataset import DEFAULT_TEST_FRACTION, DataError, ImageDataset, split_indices
from ardm.modality import TEXT

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
NUM_CHARACTERS = len(ALPHABET)  # K = 27
DEFAULT_LENGTH = 250  # characters per sequence, the paper's text8 setting
_CODES = np.full(256, 255, dtype=np.uint8)  # byte -> code; 255 marks a byte outside the alphabet
_CODES[np.frombuffer(ALPHABET.encode("ascii"), np.uint8)] = np.arange(NUM_CHARACTERS, dtype=np.uint8)
_NOT_A_LETTER = re.compile(r"[^a-z]+")


def normalise_text(text: str) -> str:
    """`text` in the alphabet, as text8 was made: lower case, every run of characters other than
    a-z (digits, punctuation, line breaks, accented letters) becomes one space, no space at either end.
    (text8 also spelled digits out; this does not.)"""
    return _NOT_A_LETTER.sub(" ", text.lower()).strip(" ")


def encode_text(text: str, where: str = "text") -> np.ndarray:
    """The codes (uint8 (n,), 0..26) of a text in the alphabet; DataError naming `where`, the first
    character outside the alphabet and its offset (in characters) otherwise."""
    raw = text.encode("utf-8", errors="surrogatepass")
    codes = _CODES[np.frombuffer(raw, np.uint8)] if raw.isascii() else None
    if codes is None or (codes == 255).any():
        offset = next(i for i, char in enumerate(text) if char not in ALPHABET)
        raise DataError(f"{where}: character {text[offset]!r} at offset {offset} is not in the alphabet "
                        "(a-z and space)")
    return codes


def decode_text(codes: np.ndarray) -> str:
    """The text of codes 0..26 (any shape, read in C order)."""
    flat = np.asarray(codes, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= NUM_CHARACTERS):
        raise ValueError(f"text codes must lie in 0..{NUM_CHARACTERS - 1}")
    return "".join(ALPHABET[code] for code in flat.tolist())


def to_sequences(codes: np.ndarray, length: int) -> np.ndarray:
    """Codes (n,) cut into floor(n / length) sequences, uint8 (N, 1, 1, length); the rest is dropped."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    count = len(codes) // length
    return np.ascontiguousarray(codes[: count * length].reshape(count, 1, 1, length))


def text_dataset(sequences: np.ndarray, name: str) -> ImageDataset:
    """An ImageDataset of modality "text" over uint8 sequences (N, 1, 1, L); DataError when N = 0."""
    if len(sequences) == 0:
        raise DataError(f"{name}: too little text for one sequence of {sequences.shape[-1]} characters")
    return ImageDataset(sequences, NUM_CHARACTERS, name, TEXT)


def split_sequences(codes: np.ndarray, split: str, length: int, test_fraction: float, name: str) -> ImageDataset:
    """`split` of the sequences of `length` characters cut from `codes`, under the fixed seeded split of
    ardm.data.dataset.split_indices (for sources that ship without a train/test split)."""
    sequences = to_sequences(codes, length)
    if len(sequences) < 2:
        raise DataError(f"{name}: {len(codes)} characters make {len(sequences)} sequence(s) of {length}, too few "
                        "for a train/test split")
    return text_dataset(sequences[split_indices(len(sequences), split, test_fraction, name)], name)


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no .txt file")
        return files
    raise DataError(f"{path}: no such file or directory")


def load_text_files(
    location: str, split: str, length: int = DEFAULT_LENGTH, test_fraction: float = DEFAULT_TEST_FRACTION
) -> ImageDataset:
    """Sequences uint8 (N, 1, 1, length) of a UTF-8 text file, or of every *.txt file under a folder (sorted
    by path, each normalised, joined by one space); a fixed seeded split of the sequences (test_fraction)."""
    name = f"txt:{location}"
    parts = []
    for path in _text_files(Path(location)):
        try:
            parts.append(normalise_text(path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from exc
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    codes = encode_text(" ".join(part for part in parts if part), name)
    return split_sequences(codes, split, length, test_fraction, name)
