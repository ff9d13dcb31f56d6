"""An English corpus shipped with every Python, so text experiments and tests run with no download.

`pydoc_data.topics` holds the help texts of the interactive `help()` (language reference sections on
statements, operators, types...). Joined in the order of their topic names and normalised to the text8
alphabet (ardm.data.text), Python 3.11's make 375,756 characters: at length 64, 5871 sequences, 5284
train and 587 test under the fixed seeded split (10%). Other Python versions ship slightly different
texts, so sizes differ between versions (the split is fixed for each). Test sequences come from the same
documents as training ones: a demo and test corpus, not a benchmark.
"""

from __future__ import annotations

import functools

import numpy as np

from ardm.data.dataset import DEFAULT_TEST_FRACTION, ImageDataset
from ardm.data.text import DEFAULT_LENGTH, encode_text, normalise_text, split_sequences

CORPUS_NAME = "pydoc"


@functools.lru_cache(maxsize=1)
def pydoc_codes() -> np.ndarray:
    """The codes (uint8 (n,), 0..26) of the normalised pydoc_data help texts (read-only, cached)."""
    from pydoc_data.topics import topics  # a large module: imported only when the corpus is used

    text = normalise_text(" ".join(topics[name] for name in sorted(topics)))
    codes = encode_text(text, CORPUS_NAME)
    codes.flags.writeable = False  # shared by every caller through the cache
    return codes


def load_pydoc_corpus(
    split: str, length: int = DEFAULT_LENGTH, test_fraction: float = DEFAULT_TEST_FRACTION
) -> ImageDataset:
    """The pydoc corpus as sequences uint8 (N, 1, 1, length), K = 27, modality "text", split by the fixed seed."""
    return split_sequences(pydoc_codes(), split, length, test_fraction, CORPUS_NAME)
