"""Compress images into the container format with an ARDM, and decompress them bit-exactly.

Sizes are reported per image as the rANS payload (whole 32-bit words), and per file including
the header and checksum (for one image: payload plus 13 bytes plus the policy's rank, see
ardm.compression.container); bits per dimension (bpd) divide by D = C*H*W variables per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ardm.compression.coder import decode_batch, deterministic_torch, encode_batch
from ardm.compression.container import (
    DEVICE_KINDS,
    FINGERPRINT_BYTES,
    MAX_THREADS,
    CompressionError,
    Container,
    Header,
    TextLayout,
    read_container,
    write_container,
)
from ardm.compression.orders import fixed_orders
from ardm.model import unwrap
from ardm.sampling import check_stage_policies
from ardm.tables import model_identity


@dataclass(frozen=True)
class CompressionResult:
    """A compressed file and its sizes.

    data: the file bytes; header: its header; image_bits: int64 (N,) payload bits of each image
    (32 per rANS word); nll_bits: float64 (N,) each image's -log2 p under the coded probabilities
    (the ideal size the payload tracks); num_dims: D = C*H*W variables per image.
    """

    data: bytes
    header: Header
    image_bits: np.ndarray
    nll_bits: np.ndarray
    num_dims: int

    @property
    def payload_bytes(self) -> int:
        """Bytes of all the images' rANS streams (the file adds its header and checksum)."""
        return int(self.image_bits.sum()) // 8

    @property
    def bpd(self) -> float:
        """Mean payload bits per dimension over the images."""
        return float(self.image_bits.mean()) / self.num_dims

    @property
    def nll_bpd(self) -> float:
        """Mean model negative log-likelihood under the order and policy, bits per dimension."""
        return float(self.nll_bits.mean()) / self.num_dims

    @property
    def file_bpd(self) -> float:
        """Whole file (header, payload, checksum) in bits per dimension of all its images."""
        return 8 * len(self.data) / (self.num_dims * self.header.num_images)


def _check_images(images: np.ndarray, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """uint8 (N, C, H, W) images that the model can code, else CompressionError."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != tuple(shape) or len(images) == 0:
        c, h, w = shape
        raise CompressionError(f"images of shape {images.shape} do not fit the model's (N, {c}, {h}, {w})")
    if not np.issubdtype(images.dtype, np.integer) or images.min() < 0 or images.max() >= num_classes:
        raise CompressionError(f"image values must be integers in 0..{num_classes - 1} (K of the model)")
    return images.astype(np.uint8)


@torch.no_grad()
def compress(
    model: nn.Module,
    images: np.ndarray,
    policy: Sequence[Sequence[int]],
    order_seed: int,
    batch_size: int = 64,
    num_threads: int | None = None,
    layout: str = "nchw",
    text: TextLayout | None = None,
) -> CompressionResult:
    """Compress uint8 images (N, C, H, W) with the model, the fixed orders of `order_seed` and a
    policy (chunk starts per stage; its budget is the number of network calls per image).

    Images are coded `batch_size` at a time on the model's device; on the CPU with `num_threads`
    torch threads (default: the current count, at most MAX_THREADS). The batching, the thread
    count and the device kind go into the header so that the decoder does alike. layout and text
    are stored for the caller (see Header). ValueError for a negative seed, a batch_size below 1
    or a thread count outside 1..MAX_THREADS; CompressionError for a device that cannot code
    deterministically.
    """
    if batch_size < 1 or order_seed < 0:
        raise ValueError(f"batch_size must be >= 1 and order_seed >= 0, got {batch_size} and {order_seed}")
    core = unwrap(model)
    images = _check_images(images, core.spec.shape, core.spec.num_classes)
    policy = check_stage_policies(policy, core.num_stages, core.num_variables)
    num_threads = num_threads or min(torch.get_num_threads(), MAX_THREADS)
    if not 1 <= num_threads <= MAX_THREADS:
        raise ValueError(f"num_threads must lie in 1..{MAX_THREADS}, got {num_threads}")
    device = next(model.parameters()).device
    if device.type not in DEVICE_KINDS:
        raise CompressionError(f"cannot code on {device.type}: coding runs on {' or '.join(DEVICE_KINDS)}")
    num_threads = 0 if device.type == "cuda" else num_threads  # the header's mark of a CUDA file
    orders = torch.from_numpy(fixed_orders(order_seed, core.num_stages, core.num_variables)).to(device)
    was_training = model.training
    model.eval()
    streams, bits = [], []
    with deterministic_torch(num_threads):
        for lo in range(0, len(images), batch_size):
            x = torch.as_tensor(images[lo : lo + batch_size], dtype=torch.long, device=device)
            batch_streams, batch_bits = encode_batch(model, x, orders, policy)
            streams += batch_streams
            bits.append(batch_bits)
    model.train(was_training)
    header = Header(
        model=fingerprint(model), layout=layout, order_seed=int(order_seed), num_threads=num_threads,
        policy=tuple(tuple(starts) for starts in policy), batch_size=min(batch_size, len(images)),
        words=tuple(len(s) for s in streams), text=text,
    )
    return CompressionResult(
        data=write_container(header, streams, images, core.num_variables), header=header,
        image_bits=32 * np.array(header.words, dtype=np.int64), nll_bits=np.concatenate(bits),
        num_dims=core.num_variables,
    )


def fingerprint(model: nn.Module) -> str:
    """The model fingerprint a file stores: the first 6 hex digits of ardm.tables.model_identity."""
    return model_identity(model)[: 2 * FINGERPRINT_BYTES]


def decode_container(model: nn.Module, data: bytes) -> tuple[Header, np.ndarray]:
    """Decode file bytes written by `compress` with the model: (header, uint8 images (N, C, H, W)).

    Raises CompressionError for another model, a truncated or corrupted file, a model on another
    kind of device than the encoder's, or decoded images that fail the file's checksum (also what
    this machine's probabilities differing from the encoder's looks like); never returns wrong pixels.
    """
    core = unwrap(model)
    container = read_container(data, fingerprint(model), core.num_stages, core.num_variables)
    here, there = next(model.parameters()).device.type, container.header.device_kind
    if here != there:
        raise CompressionError(f"the file was coded on {there} and decodes only there, not on {here} "
                               f"(pass --device {there})")
    images = _decode(model, container)
    if not container.matches(images):
        device = next(model.parameters()).device.type
        raise CompressionError(
            f"checksum mismatch: the file is corrupted or truncated, or the probabilities differ from the encoder's "
            f"(another torch build or device; decoding with torch {torch.__version__} on {device})"
        )
    return container.header, images


@torch.no_grad()
def _decode(model: nn.Module, container: Container) -> np.ndarray:
    """The images a parsed container's streams decode to (checked by the caller)."""
    core = unwrap(model)
    header, streams = container.header, container.streams
    device = next(model.parameters()).device
    orders = torch.from_numpy(fixed_orders(header.order_seed, core.num_stages, core.num_variables)).to(device)
    was_training = model.training
    model.eval()
    out = []
    with deterministic_torch(header.num_threads):
        for lo in range(0, header.num_images, header.batch_size):
            out.append(decode_batch(model, streams[lo : lo + header.batch_size], orders, header.starts).cpu())
    model.train(was_training)
    return torch.cat(out).numpy().astype(np.uint8)


def decompress(model: nn.Module, data: bytes) -> np.ndarray:
    """Decode file bytes written by `compress`: uint8 (N, C, H, W), bit-exact, or CompressionError."""
    return decode_container(model, data)[1]


def compressed_bpd(
    model: nn.Module,
    images: np.ndarray,
    policy: Sequence[Sequence[int]],
    order_seed: int,
    batch_size: int = 64,
) -> tuple[float, np.ndarray]:
    """Real compressed size of images (N, C, H, W) under a policy: (mean payload bits per
    dimension, int64 (N,) payload bits per image). The header is left out (it is shared by a
    whole file); see `compress` for the arguments."""
    result = compress(model, images, policy, order_seed, batch_size)
    return result.bpd, result.image_bits
