"""rANS coding of a batch of images with an ARDM, a fixed order per stage and a chunked policy.

Each image has its own rANS stack (constriction's AnsCoder, 32-bit words). A chunk [a, b) of
stage j is one network call at step a of that stage; its variables (those with a <= sigma_j(k) < b,
in generation order) are coded with the categorical distributions of that call. The encoder pushes
the chunks in reverse (last chunk of the last stage first), so the decoder pops them forward,
running exactly the sampler's network calls on the partially decoded images.

Encoder and decoder must derive bit-identical probabilities, or the decoder goes astray:
  - the network sees identical inputs in an identical batch (CPU kernels give batch-size-dependent
    rounding, so the decoder batches the images exactly as the encoder did);
  - deterministic kernels and a fixed torch thread count on the CPU; on CUDA, deterministic
    cuBLAS workspaces (`deterministic_torch`), and the decoder on the encoder's kind of device;
  - the model's float32 log-probabilities become float64 probabilities by one softmax on the CPU;
  - constriction quantises each row to 24-bit frequencies deterministically and never gives a
    symbol zero frequency, so impossible upscale digits (probability exactly 0) cost nothing but
    cannot break the coder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import constriction
import numpy as np
import torch
from torch import nn

from ardm.compression.container import CompressionError
from ardm.model import unwrap

# constriction's submodules are attributes of its extension module, not importable packages.
AnsCoder = constriction.stream.stack.AnsCoder
# One model family for every row: probabilities are given per symbol. perfect=False is the fast,
# deterministic quantisation (the default of constriction >= 0.5, set explicitly for older ones).
FAMILY = constriction.stream.model.Categorical(perfect=False)


# cuBLAS is deterministic only with one of these workspace configurations, read when CUDA starts.
CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")


def prepare_cuda_determinism() -> None:
    """Choose a deterministic cuBLAS workspace unless one is set: call before CUDA starts (before
    a model moves to a GPU), as `ardm compress` and `decompress` do."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])


@contextmanager
def deterministic_torch(num_threads: int) -> Iterator[None]:
    """Deterministic algorithms inside the block, restored after: on the CPU with `num_threads`
    torch threads; num_threads = 0 codes on CUDA, and raises CompressionError unless cuBLAS was
    given a deterministic workspace before CUDA started (`prepare_cuda_determinism`)."""
    if num_threads == 0 and os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in CUBLAS_DETERMINISTIC:
        raise CompressionError(
            "CUDA coding needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment before CUDA starts "
            "(ardm compress and decompress set it; a library caller calls prepare_cuda_determinism first)")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.get_num_threads(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False  # autotuning may pick another kernel for the decoder
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.set_num_threads(previous[2])
        torch.backends.cudnn.benchmark = previous[3]


def _calls(policy: Sequence[Sequence[int]], num_variables: int) -> list[tuple[int, int, int]]:
    """(stage, a, b) of every network call in generation order."""
    return [(j, a, b) for j, starts in enumerate(policy) for a, b in zip(starts, [*starts[1:], num_variables],
                                                                          strict=True)]


def _mask(ranks: torch.Tensor, start: int, x: torch.Tensor) -> torch.Tensor:
    """Bool (B, C, H, W): the variables generated before step `start` of the stage (ranks: (D,))."""
    return (ranks < start).view(1, *x.shape[1:]).expand_as(x).contiguous()


@torch.no_grad()
def _probabilities(
    model: nn.Module, x_shown: torch.Tensor, mask: torch.Tensor, stage: int, start: int, positions: torch.Tensor
) -> np.ndarray:
    """float64 (B, n, b): digit probabilities of the variables at `positions` (flat CHW indices,
    (n,)) from one network call at step `start` of `stage`; rows sum to 1, impossible digits are 0."""
    stage_t = torch.full((x_shown.shape[0],), stage, dtype=torch.long, device=x_shown.device)
    log_probs = model(x_shown, mask, stage_t, torch.full_like(stage_t, start)).flatten(1, 3)[:, positions]
    return log_probs.cpu().double().softmax(-1).numpy()


def known_chunks(
    model: nn.Module, x: torch.Tensor, orders: torch.Tensor, policy: Sequence[Sequence[int]], reverse: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The network calls of a policy on known images x (B, C, H, W) long.

    orders: (S, D) long ranks on x's device. Yields per call, in generation order (reverse: last
    first), the digit probabilities float64 (B, n, b) and the true digits int32 (B, n) of the n
    variables of the chunk, in generation order.
    """
    core = unwrap(model)
    d = core.num_variables
    positions = orders.argsort(dim=1)  # positions[j, t]: the variable generated at step t of stage j
    calls = _calls(policy, d)
    for j, a, b in reversed(calls) if reverse else calls:
        mask = _mask(orders[j], a, x)
        x_shown = torch.where(mask, core.upscaler.coarse(x, j + 1), core.upscaler.coarse(x, j))
        chunk = positions[j, a:b]
        digits = core.upscaler.digit(x, j).flatten(1)[:, chunk]
        yield _probabilities(model, x_shown, mask, j, a, chunk), digits.cpu().numpy().astype(np.int32)


def information_bits(probs: np.ndarray, digits: np.ndarray) -> np.ndarray:
    """-log2 p of the true digits, summed per image: float64 (B,) from probs (B, n, b), digits (B, n)."""
    return -np.log2(np.take_along_axis(probs, digits[..., None].astype(np.int64), -1)[..., 0]).sum(1)


def encode_batch(
    model: nn.Module, x: torch.Tensor, orders: torch.Tensor, policy: Sequence[Sequence[int]]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Encode images x (B, C, H, W) long: one uint32 rANS stream per image, and each image's
    information content under the coded probabilities (float64 (B,), bits; the ideal size)."""
    coders = [AnsCoder() for _ in range(x.shape[0])]
    bits = np.zeros(x.shape[0])
    for probs, digits in known_chunks(model, x, orders, policy, reverse=True):
        for coder, row_digits, row_probs in zip(coders, digits, probs, strict=True):
            coder.encode_reverse(row_digits, FAMILY, row_probs)
        bits += information_bits(probs, digits)
    return [coder.get_compressed() for coder in coders], bits


def decode_batch(
    model: nn.Module, streams: Sequence[np.ndarray], orders: torch.Tensor, policy: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Decode one batch of streams (as encode_batch made them, same batch): long (B, C, H, W) on
    the orders' device. Raises CompressionError when a stream is malformed, decodes to a value
    >= K, or is not used up exactly; a wrong but plausible image is left to the caller's checksum."""
    core = unwrap(model)
    device = orders.device
    try:
        coders = [AnsCoder(np.ascontiguousarray(words, dtype=np.uint32)) for words in streams]
    except ValueError as err:  # constriction refuses e.g. a stream ending in a zero word
        raise CompressionError(f"corrupted payload ({err})") from err
    x = torch.zeros(len(streams), *core.spec.shape, dtype=torch.long, device=device)  # x^(0): absorbing
    positions = orders.argsort(dim=1)
    for j, a, b in _calls(policy, core.num_variables):
        mask = _mask(orders[j], a, x)
        chunk = positions[j, a:b]
        probs = _probabilities(model, x, mask, j, a, chunk)
        digits = np.stack([coder.decode(FAMILY, row) for coder, row in zip(coders, probs, strict=True)])
        flat = x.view(x.shape[0], -1)
        refined = core.upscaler.refine(flat[:, chunk], torch.from_numpy(digits).long().to(device), j)
        if int(refined.max()) >= core.spec.num_classes:  # only a wrong decode reaches an impossible digit
            raise CompressionError("corrupted payload or wrong model: decoded a value >= K")
        flat[:, chunk] = refined
    if not all(coder.is_empty() for coder in coders):
        raise CompressionError("corrupted payload or wrong model: compressed data left over after decoding")
    return x
