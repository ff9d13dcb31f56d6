"""The codec's fixed generation orders, and choosing one as the paper does.

A codec uses one order per stage for every image, drawn from a seed that the compressed file
stores. The paper scores a few random orders on training data and keeps the best; orders differ
little (< 0.02 bpd on CIFAR-10), but the choice is free at decode time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ardm.compression.coder import information_bits, known_chunks
from ardm.model import unwrap
from ardm.sampling import check_stage_policies


def fixed_orders(seed: int, num_stages: int, num_variables: int) -> np.ndarray:
    """int64 (S, D) ranks: ranks[j, k] = the step of stage j that generates variable k (flat CHW).

    Stage j's order is a uniform random permutation from numpy's PCG64 seeded with
    SeedSequence([seed, j]): integer arithmetic only, so every machine derives the same order.
    """
    ranks = np.empty((num_stages, num_variables), dtype=np.int64)
    for j in range(num_stages):
        permutation = np.random.default_rng(np.random.SeedSequence([seed, j])).permutation(num_variables)
        ranks[j, permutation] = np.arange(num_variables)
    return ranks


@torch.no_grad()
def policy_nll_bits(
    model: nn.Module,
    images: np.ndarray,
    policy: Sequence[Sequence[int]],
    order_seed: int,
    batch_size: int = 64,
) -> np.ndarray:
    """-log2 p(image) under the fixed orders of `order_seed` and a chunked policy: float64 (N,) bits
    per image, the size an ideal entropy coder reaches (the codec adds a few bits per image).

    images: uint8 (N, C, H, W); policy: chunk starts per stage (see ardm.sampling).
    """
    core = unwrap(model)
    policy = check_stage_policies(policy, core.num_stages, core.num_variables)
    device = next(model.parameters()).device
    orders = torch.from_numpy(fixed_orders(order_seed, core.num_stages, core.num_variables)).to(device)
    was_training = model.training
    model.eval()
    bits = []
    for lo in range(0, len(images), batch_size):
        x = torch.tensor(np.asarray(images[lo : lo + batch_size]), dtype=torch.long, device=device)
        bits.append(sum(information_bits(p, s) for p, s in known_chunks(model, x, orders, policy)))
    model.train(was_training)
    return np.concatenate(bits)


@dataclass(frozen=True)
class OrderChoice:
    """seed: the chosen order seed; bpd: mean bits per dimension of each seed tried on the data."""

    seed: int
    bpd: dict[int, float]


def choose_order(
    model: nn.Module,
    images: np.ndarray,
    policy: Sequence[Sequence[int]],
    num_orders: int = 5,
    batch_size: int = 64,
) -> OrderChoice:
    """The best of order seeds 0..num_orders-1 by mean policy NLL (bpd) on images (N, C, H, W),
    normally training images (the paper: 5 orders). Ties go to the smaller seed."""
    if num_orders < 1:
        raise ValueError(f"num_orders must be >= 1, got {num_orders}")
    d = unwrap(model).num_variables
    bpd = {seed: float(policy_nll_bits(model, images, policy, seed, batch_size).mean()) / d
           for seed in range(num_orders)}
    return OrderChoice(seed=min(bpd, key=lambda seed: (bpd[seed], seed)), bpd=bpd)
