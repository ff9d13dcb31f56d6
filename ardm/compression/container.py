"""The compressed-file format, version 3: a few header bytes, the rANS payload and a CRC32.

Nothing the decoder can take from the checkpoint is stored: the image shape, K, the branching
factor and the number of stages S and of variables D come from the model, which the file names
by a 3-byte fingerprint. What is stored is what the encoder chose: the order seed, the device it
coded on, the budget and policy, the images' layout and, for a batch, its batching and where
each image's stream starts. Integers are unsigned LEB128 varints (7 bits a byte).

    size          field
    2             signature and version: 0x89 (the high bit catches 7-bit mangling), then 0x60 + VERSION
    3             model fingerprint: the first 3 bytes of the model's identity hash (ardm.tables.model_identity)
    varint        flags: the layout's index in LAYOUTS (bits 0-2), a batch (bit 3), calls per stage
                  listed (bit 4), policy listed (bit 5)
    varint        order seed (ardm.compression.orders.fixed_orders)
    varint        the coding device: 0 for CUDA, else the torch CPU thread count
    varint        budget B: network calls per image
    S varints     calls per stage, if listed (else B split evenly, as the "naive" and "optimal" policies do)
    R bytes       the policy's rank, if listed (else the naive policy of those calls, evenly spaced chunks)
    varint        N images, in a batch (else 1)
    varint        images per batch of network calls, in a batch (else 1)
    N-1 varints   uint32 words of each image's rANS stream but the last, in a batch; the last takes the rest
    varint        for the text layout only: 2 * T + E, where T is the number of characters of the text file
                  (its N sequences of L characters hold T, the rest padding) and E = 1 if the file ends
                  with a line break after them (ardm.compression.text_files)
    4 * W         payload: the N streams of uint32 words, little-endian, in order
    4             CRC32 of every byte before it, continued over the decoded images

The policy. The decoder re-derives the naive policy from the budget. The optimal policies come
from a step table estimated on training data, which the decoder does not have, so they are
listed: a stage of k calls has chunk starts 0 = s_0 < s_1 < ... < s_{k-1} < D, one of
C(D-1, k-1) subsets, stored as its rank in the combinatorial number system; the stages' ranks
make one mixed-radix integer of R = ceil(log2(prod_j C(D-1, k_j-1)) / 8) bytes, the least a list
of chunk starts takes without a model of it (R = 0 for budgets S and S*D; 4 bytes for 8 calls
over D = 64; 11 bytes for 20 calls over D = 192).

So one image costs its payload plus 13 bytes (seed, thread count and budget below 128) plus R:
at most 24 bytes for budgets up to 20 on an 8x8 RGB image.

The device. CPU and CUDA kernels round differently, so a file decodes only on the kind of
device that encoded it; the reader refuses another kind with one line before decoding.

The check. The CRC32 runs over the file and on over the decoded images (uint8 (N, C, H, W), C
order), and the decoder returns pixels only when it matches. It thus catches corruption and
truncation (a file cut at a word boundary just looks like a shorter last stream), a decoder
whose probabilities differ from the encoder's, and the 1 in 2^24 other model whose fingerprint
collides with the encoder's: a wrong decode goes unnoticed with probability 2^-32.

Reading checks, in this order, and raises CompressionError with one line for the first failure:
signature, version, model fingerprint, header fields, payload length; the decoder then checks
the device kind and the CRC32 (`Container.matches`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ardm.budgets import split_evenly
from ardm.parallel import naive_policy

SIGNATURE = 0x89
VERSION = 3
MAGIC = bytes([SIGNATURE, 0x60 + VERSION])
_OLD_MAGIC = b"\x89A"  # versions 1 (b"\x89ARDMZ" and a uint16) and 2 (then a version byte) began so
FINGERPRINT_BYTES = 3
DEVICE_KINDS = ("cpu", "cuda")  # the kinds a file can be coded on
LAYOUTS = ("nchw", "chw", "hwc", "hw", "nhwc", "png", "txt")  # stored as an index: append only, never reorder
TEXT_LAYOUT = "txt"
MAX_THREADS = 1024
_BATCH, _COUNTS, _LISTED = 1 << 3, 1 << 4, 1 << 5
_MAX_VARINT_BYTES = 10  # 70 bits: far above any real seed, budget or length
_CRC_SIZE = 4


class CompressionError(ValueError):
    """A compressed file that cannot be decoded exactly: not ours, truncated, corrupted, made with
    another model, or decoded to images that fail their checksum (one-line message)."""


@dataclass(frozen=True)
class TextLayout:
    """How a text file maps onto the coded sequences: its first `chars` characters are the text, the rest
    of the last sequence padding; `newline`: the file ends with one line break after them."""

    chars: int
    newline: bool


@dataclass(frozen=True)
class Header:
    """What a file stores besides the payload (the model gives the rest, see the module docstring).

    model: the model's fingerprint, 6 hex digits (the start of ardm.tables.model_identity);
    layout: how the images were given (one of LAYOUTS), so the decoder can write them back alike;
    order_seed: seed of the fixed generation order of every stage; num_threads: torch CPU
    threads while coding on the CPU, 0 when coding on CUDA (see `device_kind`); policy: chunk
    starts per stage (network call i of stage j starts at step policy[j][i]); batch_size: images
    per batch of network calls, 1..N (the decoder must batch the same way to get bit-identical
    probabilities); words: uint32 words of each image's rANS stream; text: for the "txt" layout,
    where the text ends in its sequences (None for every other layout).
    """

    model: str
    layout: str
    order_seed: int
    num_threads: int
    policy: tuple[tuple[int, ...], ...]
    batch_size: int
    words: tuple[int, ...]
    text: TextLayout | None = None

    @property
    def device_kind(self) -> str:
        """The kind of device the file was coded on, and must be decoded on: cpu or cuda."""
        return "cuda" if self.num_threads == 0 else "cpu"

    @property
    def num_images(self) -> int:
        return len(self.words)

    @property
    def budget(self) -> int:
        """Network calls per image."""
        return sum(len(starts) for starts in self.policy)

    @property
    def starts(self) -> list[list[int]]:
        """Chunk starts per stage as lists (the form ardm.sampling and the coder take)."""
        return [list(starts) for starts in self.policy]


@dataclass(frozen=True)
class Container:
    """A parsed file: the header, one uint32 array per image, and its checksum, which the decoded
    images must complete (`matches`)."""

    header: Header
    streams: list[np.ndarray]
    file_crc: int  # CRC32 of the bytes before the stored checksum
    crc: int  # the stored checksum

    def matches(self, images: np.ndarray) -> bool:
        """True when the decoded images complete the stored CRC32."""
        return zlib.crc32(_image_bytes(images), self.file_crc) == self.crc


def write_container(header: Header, streams: Sequence[np.ndarray], images: np.ndarray, num_variables: int) -> bytes:
    """The file bytes for a header, one uint32 stream per image and the images (uint8 (N, C, H, W),
    for the checksum) of a model with D = num_variables. ValueError for a header it cannot store."""
    if [len(words) for words in streams] != list(header.words) or len(images) != header.num_images:
        raise ValueError("streams or images differ from header.words")
    if len(bytes.fromhex(header.model)) != FINGERPRINT_BYTES:
        raise ValueError(f"model fingerprint must be {2 * FINGERPRINT_BYTES} hex digits, got {header.model!r}")
    if header.layout not in LAYOUTS or not 0 <= header.num_threads <= MAX_THREADS or header.order_seed < 0:
        raise ValueError(f"cannot store layout {header.layout!r}, {header.num_threads} threads or order seed "
                         f"{header.order_seed}")
    if not 1 <= header.batch_size <= header.num_images:
        raise ValueError(f"batch_size {header.batch_size} outside 1..{header.num_images}")
    if (header.text is not None) != (header.layout == TEXT_LAYOUT) or (
            header.text is not None and not _text_fits(header.text.chars, header.num_images, num_variables)):
        raise ValueError(f"layout {header.layout!r} with text {header.text}: the text layout needs the text's "
                         f"length, of {header.num_images} sequences of {num_variables}, and no other layout has one")
    counts = [len(starts) for starts in header.policy]
    listed_counts = counts != split_evenly(header.budget, len(counts))
    listed = any(list(starts) != _naive(k, num_variables) for starts, k in zip(header.policy, counts, strict=True))
    batch = header.num_images > 1
    flags = LAYOUTS.index(header.layout) | batch * _BATCH | listed_counts * _COUNTS | listed * _LISTED
    out = bytearray(MAGIC + bytes.fromhex(header.model))
    for value in (flags, header.order_seed, header.num_threads, header.budget, *(counts if listed_counts else ())):
        out += _varint(value)
    if listed:
        out += _policy_rank_bytes(header.policy, num_variables)
    if batch:
        for value in (header.num_images, header.batch_size, *header.words[:-1]):
            out += _varint(value)
    if header.text is not None:
        out += _varint(2 * header.text.chars + header.text.newline)
    out += b"".join(np.asarray(words, dtype="<u4").tobytes() for words in streams)
    return bytes(out) + zlib.crc32(_image_bytes(images), zlib.crc32(out)).to_bytes(_CRC_SIZE, "little")


def read_container(data: bytes, model: str, num_stages: int, num_variables: int) -> Container:
    """Parse file bytes for the model with fingerprint `model` (6 hex digits), S = num_stages and
    D = num_variables. Raises CompressionError; the device kind and the CRC32 are left to the
    decoder (Header.device_kind, Container.matches)."""
    if len(data) < len(MAGIC):
        if data == MAGIC[: len(data)] or data == _OLD_MAGIC[: len(data)]:
            raise CompressionError(f"truncated: {len(data)} bytes, not even the file signature")
        raise CompressionError("not an ARDM compressed file (bad signature)")
    if data.startswith(_OLD_MAGIC):
        old = 1 if data[2:3] == b"R" else data[2] if len(data) > 2 else "?"
        raise CompressionError(f"format version {old} (an older ardm), this code reads version {VERSION}")
    if data[0] != SIGNATURE or not 0x60 < data[1] < 0x80:
        raise CompressionError("not an ARDM compressed file (bad signature)")
    if data[1] != MAGIC[1]:
        raise CompressionError(f"format version {data[1] - 0x60}, this code reads version {VERSION}")
    reader = _Reader(data, len(MAGIC))
    fingerprint = reader.take(FINGERPRINT_BYTES).hex()
    if fingerprint != model:
        raise CompressionError(f"compressed with model {fingerprint}, but this model is {model}")
    flags, order_seed, num_threads, budget = (reader.varint() for _ in range(4))
    if flags >= 2 * _LISTED or flags % _BATCH >= len(LAYOUTS) or num_threads > MAX_THREADS:
        raise CompressionError("corrupted header (flags or thread count)")
    if not num_stages <= budget <= num_stages * num_variables:
        raise CompressionError(f"corrupted header (budget {budget} outside {num_stages}..{num_stages * num_variables})")
    counts = [reader.varint() for _ in range(num_stages)] if flags & _COUNTS else split_evenly(budget, num_stages)
    if sum(counts) != budget or not all(1 <= k <= num_variables for k in counts):
        raise CompressionError("corrupted header (calls per stage)")
    if flags & _LISTED:
        policy = _policy_from_rank(reader, counts, num_variables)
    else:
        policy = [_naive(k, num_variables) for k in counts]
    num_images, batch_size, words = 1, 1, []
    if flags & _BATCH:
        num_images, batch_size = reader.varint(), reader.varint()
        if num_images < 2 or not 1 <= batch_size <= num_images:
            raise CompressionError("corrupted header (number of images or batch size)")
        words = [reader.varint() for _ in range(num_images - 1)]
    text = None
    if LAYOUTS[flags % _BATCH] == TEXT_LAYOUT:
        chars, newline = divmod(reader.varint(), 2)
        if not _text_fits(chars, num_images, num_variables):
            raise CompressionError(f"corrupted header (a text of {chars} characters in {num_images} sequences)")
        text = TextLayout(chars, bool(newline))
    payload = len(data) - reader.pos - _CRC_SIZE
    if payload < 4 * sum(words):
        raise CompressionError(f"truncated: {len(data)} bytes, the header announces at least "
                               f"{reader.pos + 4 * sum(words) + _CRC_SIZE}")
    if payload % 4:
        raise CompressionError(f"truncated or corrupted: {len(data)} bytes, the payload is not whole 32-bit words")
    words.append(payload // 4 - sum(words))
    stream = np.frombuffer(data, dtype="<u4", count=payload // 4, offset=reader.pos).astype(np.uint32)
    bounds = np.cumsum([0, *words])
    header = Header(model=fingerprint, layout=LAYOUTS[flags % _BATCH], order_seed=order_seed, num_threads=num_threads,
                    policy=tuple(tuple(starts) for starts in policy), batch_size=batch_size, words=tuple(words),
                    text=text)
    return Container(header=header, streams=[stream[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                     file_crc=zlib.crc32(data[:-_CRC_SIZE]), crc=int.from_bytes(data[-_CRC_SIZE:], "little"))


def _text_fits(chars: int, num_sequences: int, length: int) -> bool:
    """A text of `chars` characters fills the last of `num_sequences` sequences of `length` at least in
    part (an empty text is one sequence of padding)."""
    return (num_sequences - 1) * length < chars <= num_sequences * length or (chars == 0 and num_sequences == 1)


def _image_bytes(images: np.ndarray) -> bytes:
    return np.ascontiguousarray(images, dtype=np.uint8).tobytes()


def _naive(calls: int, num_variables: int) -> list[int]:
    return naive_policy(num_variables, calls).starts.tolist()


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, the high bit set on all bytes but the last."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Reader:
    """Reads a header front to back; running out of bytes is a truncated file."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data) - _CRC_SIZE:  # the checksum must follow the header
            raise CompressionError(f"truncated: {len(self.data)} bytes, the header is cut short")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def varint(self) -> int:
        value = 0
        for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise CompressionError("corrupted header (an overlong number)")


def _radices(counts: Sequence[int], num_variables: int) -> list[int]:
    """How many policies each stage can have: C(D-1, k-1) sets of chunk starts after step 0."""
    return [math.comb(num_variables - 1, k - 1) for k in counts]


def _policy_rank_bytes(policy: Sequence[Sequence[int]], num_variables: int) -> bytes:
    """The policy's rank (little-endian, R bytes): per stage the combinatorial number system
    sum_i C(s_i - 1, i) over starts s_1 < ... < s_{k-1}, the stages combined in mixed radix."""
    radices = _radices([len(starts) for starts in policy], num_variables)
    rank = 0
    for starts, radix in zip(reversed(policy), reversed(radices), strict=True):
        rank = rank * radix + sum(math.comb(s - 1, i) for i, s in enumerate(starts[1:], start=1))
    return rank.to_bytes(_rank_size(radices), "little")


def _policy_from_rank(reader: _Reader, counts: Sequence[int], num_variables: int) -> list[list[int]]:
    """Read a policy's rank (see _policy_rank_bytes) and unrank it: chunk starts per stage."""
    radices = _radices(counts, num_variables)
    rank = int.from_bytes(reader.take(_rank_size(radices)), "little")
    if rank >= math.prod(radices):
        raise CompressionError("corrupted header (policy rank out of range)")
    policy = []
    for calls, radix in zip(counts, radices, strict=True):
        rank, stage_rank = divmod(rank, radix)
        starts, c = [], num_variables - 1
        for i in range(calls - 1, 0, -1):  # greedy: the largest c with C(c, i) <= what is left
            c -= 1
            while math.comb(c, i) > stage_rank:
                c -= 1
            stage_rank -= math.comb(c, i)
            starts.append(c + 1)
        policy.append([0, *reversed(starts)])
    return policy


def _rank_size(radices: Sequence[int]) -> int:
    return ((math.prod(radices) - 1).bit_length() + 7) // 8
