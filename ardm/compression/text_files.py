"""Text files for the compress / decompress commands: .txt in the text8 alphabet, byte-exact both ways.

A file that a text model can code holds only a-z and space (ardm.data.text), optionally followed by one
line break ("\\n"). Its T characters are cut into N = max(1, ceil(T / L)) sequences of the model's L,
the last padded with spaces; the compressed file stores T and the line break (container.TextLayout),
so that decompressing writes back the same bytes. Anything else (upper case, punctuation, more lines) is
refused with the first character outside the alphabet and its offset; normalise such text first
(ardm.data.text.normalise_text, or the txt: dataset spec).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ardm.compression.container import TextLayout
from ardm.data import DataError
from ardm.data.text import decode_text, encode_text

SUFFIX = ".txt"


def is_text_file(path: str | Path) -> bool:
    """True for a path ending in .txt (which compress reads as text, never as a dataset spec)."""
    return Path(path).suffix.lower() == SUFFIX


def read_text_file(path: str | Path, length: int) -> tuple[np.ndarray, TextLayout]:
    """(uint8 sequences (N, 1, 1, length), the TextLayout to store) of a .txt file; DataError naming the
    file and the first character outside the alphabet with its offset, or a file that is not UTF-8."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason})") from exc
    newline = text.endswith("\n")
    codes = encode_text(text[:-1] if newline else text, str(path))
    count = max(1, -(-len(codes) // length))
    padded = np.zeros(count * length, dtype=np.uint8)  # code 0: space
    padded[: len(codes)] = codes
    return padded.reshape(count, 1, 1, length), TextLayout(len(codes), newline)


def write_text_file(path: str | Path, sequences: np.ndarray, text: TextLayout) -> Path:
    """Write the text held by sequences (N, 1, 1, L) under `text` (its length and line break) to a .txt file."""
    path = Path(path)
    if not is_text_file(path):
        raise DataError(f"{path}: text is written to a .txt file")
    path.write_bytes((decode_text(sequences)[: text.chars] + ("\n" if text.newline else "")).encode("ascii"))
    return path
