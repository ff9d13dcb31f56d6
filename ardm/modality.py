"""Modalities: what the discrete variables of a dataset are, and the unit their likelihood is given in.

An image has C*H*W variables (one per channel of each pixel) and its likelihood is in bits per
dimension; a text has one variable per character and its likelihood is in bits per character. Both are
held alike, as uint8 arrays (N, C, H, W): a text sequence of L characters is (1, 1, L), so the
objective, tables, DP, sampling and compression have one code path; only units, file formats and the
network preset differ.
"""

from __future__ import annotations

IMAGE = "image"
TEXT = "text"
MODALITIES = (IMAGE, TEXT)
_UNITS = {IMAGE: ("bits per dimension", "bpd"), TEXT: ("bits per character", "bpc")}
_EXAMPLES = {IMAGE: "images", TEXT: "sequences"}


def check_modality(modality: str) -> str:
    """`modality` itself, or ValueError naming the valid ones."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    return modality


def unit_name(modality: str) -> str:
    """The likelihood unit in words: "bits per dimension" (image) or "bits per character" (text)."""
    return _UNITS[check_modality(modality)][0]


def unit_abbreviation(modality: str) -> str:
    """The likelihood unit abbreviated: "bpd" (image) or "bpc" (text)."""
    return _UNITS[check_modality(modality)][1]


def examples_name(modality: str) -> str:
    """What the examples of a dataset are called in messages: "images" or "sequences" (text)."""
    return _EXAMPLES[check_modality(modality)]
