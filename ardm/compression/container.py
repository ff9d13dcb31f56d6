"""The compressed-file format: a self-describing header, the rANS payload and a checksum.

Layout (all integers little-endian):

    offset      size     field
    0           8        magic b"\\x89ARDMZ\\r\\n" (the high byte and CR LF catch 7-bit and text-mode mangling)
    8           2        format version (uint16), VERSION
    10          4        header length H in bytes (uint32)
    14          H        header: zlib-compressed UTF-8 JSON, the fields of `Header`
    14 + H      4 * W    payload: W = sum(header.words) uint32 words, one rANS stream per image, in order
    end - 4     4        CRC32 of every byte before it (uint32)

Reading checks, in this order, and raises CompressionError with one line for the first failure:
magic, version, header, file length (truncated or trailing bytes), CRC32. What the header says
about the model and the decoded images (model identity, image digest) is checked by the decoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import asdict, dataclass

import numpy as np

MAGIC = b"\x89ARDMZ\r\n"
VERSION = 1
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_CRC = struct.Struct("<I")


class CompressionError(ValueError):
    """A compressed file that cannot be decoded exactly: not ours, truncated, corrupted, made with
    another model, or decoded to images that fail their checksum (one-line message)."""


@dataclass(frozen=True)
class Header:
    """Everything the decoder needs besides the model's weights.

    model: identity hash of the model (ardm.tables.model_identity); shape: (C, H, W) of one image;
    num_classes: K; branching: b actually used (min(b, K)); order_seed: seed of the fixed generation
    order of every stage (ardm.compression.orders.fixed_orders); policy: per stage, the chunk sizes
    (network call i of the stage generates policy[s][i] variables; each row sums to D); budget:
    total network calls (sum of the row lengths); batch_size: images per batch of network calls (the
    decoder must batch the same way to get bit-identical probabilities); num_threads: torch CPU
    threads during coding; words: uint32 words of each image's rANS stream; image_digest: first 16
    hex digits of the sha256 of the uint8 images (N, C, H, W) in C order; layout: how the images
    were given ("nchw", "chw", "hwc", "hw", "nhwc" or "png"), so the decoder can write them back alike;
    torch, device: the torch version and device type that encoded (named in checksum errors).
    """

    model: str
    shape: tuple[int, int, int]
    num_classes: int
    branching: int
    order_seed: int
    policy: tuple[tuple[int, ...], ...]
    budget: int
    batch_size: int
    num_threads: int
    words: tuple[int, ...]
    image_digest: str
    layout: str
    torch: str
    device: str

    @property
    def num_images(self) -> int:
        return len(self.words)

    @property
    def starts(self) -> list[list[int]]:
        """Chunk starts per stage (the form ardm.sampling and ardm.evaluate take)."""
        return [np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist() for sizes in self.policy]


def chunk_sizes(starts: list[list[int]], num_variables: int) -> tuple[tuple[int, ...], ...]:
    """Per-stage chunk sizes from per-stage chunk starts (each row sums to D); zlib packs them well."""
    return tuple(tuple(int(v) for v in np.diff([*row, num_variables])) for row in starts)


def image_digest(images: np.ndarray) -> str:
    """First 16 hex digits (64 bits) of the sha256 of uint8 images (N, C, H, W), C order."""
    return hashlib.sha256(np.ascontiguousarray(images, dtype=np.uint8).tobytes()).hexdigest()[:16]


def write_container(header: Header, payload: list[np.ndarray]) -> bytes:
    """The file bytes for a header and one uint32 stream per image (lengths must match header.words)."""
    if [len(words) for words in payload] != list(header.words):
        raise ValueError("payload word counts differ from header.words")
    head = zlib.compress(json.dumps(asdict(header), separators=(",", ":")).encode(), 9)
    body = b"".join(np.asarray(words, dtype="<u4").tobytes() for words in payload)
    data = _PREFIX.pack(MAGIC, VERSION, len(head)) + head + body
    return data + _CRC.pack(zlib.crc32(data))


def read_container(data: bytes) -> tuple[Header, list[np.ndarray]]:
    """Parse and verify file bytes: (header, one uint32 array per image). Raises CompressionError."""
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise CompressionError(f"truncated: {len(data)} bytes, not even the file signature")
        raise CompressionError("not an ARDM compressed file (bad signature)")
    if len(data) < _PREFIX.size:
        raise CompressionError(f"truncated: {len(data)} bytes, the prefix alone is {_PREFIX.size}")
    _, version, head_len = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise CompressionError(f"format version {version}, this code reads version {VERSION}")
    head_end = _PREFIX.size + head_len
    if len(data) < head_end + _CRC.size:
        raise CompressionError(f"truncated: {len(data)} bytes, the header alone needs {head_end + _CRC.size}")
    header = _parse_header(data[_PREFIX.size : head_end])
    expected = head_end + 4 * sum(header.words) + _CRC.size
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "corrupted (trailing bytes)"
        raise CompressionError(f"{what}: {len(data)} bytes, the header announces {expected}")
    (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != crc:
        raise CompressionError("corrupted: CRC32 checksum mismatch")
    words = np.frombuffer(data, dtype="<u4", count=sum(header.words), offset=head_end).astype(np.uint32)
    bounds = np.cumsum([0, *header.words])
    return header, [words[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _parse_header(raw: bytes) -> Header:
    """Decompress and validate the JSON header; any malformation is a CompressionError."""
    try:
        fields = json.loads(zlib.decompress(raw))
        header = Header(**{
            **fields, "shape": tuple(fields["shape"]), "words": tuple(fields["words"]),
            "policy": tuple(tuple(row) for row in fields["policy"]),
        })
    except (zlib.error, ValueError, TypeError, KeyError) as err:  # JSONDecodeError is a ValueError
        raise CompressionError(f"corrupted header ({type(err).__name__})") from err
    ints = [header.num_classes, header.branching, header.order_seed, header.budget, header.batch_size,
            header.num_threads, *header.shape, *header.words, *(v for row in header.policy for v in row)]
    if (
        not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints)
        or len(header.shape) != 3
        or min(header.shape) < 1
        or min(header.batch_size, header.num_threads) < 1
        or any(not row or min(row) < 1 or sum(row) != math.prod(header.shape) for row in header.policy)
        or header.budget != sum(len(row) for row in header.policy)
    ):
        raise CompressionError("corrupted header (inconsistent fields)")
    return header
