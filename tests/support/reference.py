"""Small networks and brute-force references for exact tests on tiny D and K.

The references deliberately avoid the library's upscaling and masking code: they rebuild each
step's input with Python integers and turn raw network logits into digit probabilities by
explicit sums, so a bug in ardm.upscale or ardm.objective cannot cancel out.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn

from ardm.checkpoint import save_checkpoint
from ardm.model import ARDM, ModelSpec, build_ardm
from ardm.networks import get_preset


class TinyNet(nn.Module):
    """A context-dependent MLP obeying the ARDMNet protocol: (x, mask, stage, step) -> logits.

    Its conditionals depend on every input, so exact identities are tested on a non-trivial model.
    """

    def __init__(self, shape: tuple[int, int, int], num_classes: int, num_stages: int, num_outputs: int) -> None:
        super().__init__()
        self.shape, self.k, self.s, self.out = shape, num_classes, num_stages, num_outputs
        d = math.prod(shape)
        self.body = nn.Sequential(nn.Linear(2 * d + num_stages + 1, 32), nn.Tanh(), nn.Linear(32, d * num_outputs))
        with torch.no_grad():
            for p in self.body.parameters():
                p.normal_(0, 1.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, stage: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        d = math.prod(self.shape)
        feats = torch.cat(
            [
                x.flatten(1).float() * 2 / self.k - 1,
                mask.flatten(1).float(),
                nn.functional.one_hot(stage, self.s).float(),
                step.float()[:, None] / (self.s * d),
            ],
            dim=1,
        )
        return self.body(feats).view(b, *self.shape, self.out)


class TableNet(nn.Module):
    """Fixed logits per variable, ignoring the context: its samples have a known distribution."""

    def __init__(self, shape: tuple[int, int, int], num_outputs: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(*shape, num_outputs) * 1.5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, stage: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], *self.logits.shape)


def num_stages(k: int, b: int) -> int:
    b = min(b, k)
    s = 1
    while b**s < k:
        s += 1
    return s


def tiny_ardm(k: int, b: int, param: str, shape=(1, 1, 3), net: str = "tiny", seed: int = 0) -> ARDM:
    torch.manual_seed(seed)
    s = num_stages(k, b)
    outputs = k if param == "data" else min(b, k)
    network = TinyNet(shape, k, s, outputs) if net == "tiny" else TableNet(shape, outputs)
    return ARDM(network, ModelSpec(shape=shape, num_classes=k, branching=b, parameterization=param, network={}))


def unet_model(shape, k: int, b: int, seed: int = 0):
    """An untrained cpu-tiny U-Net ARDM whose zero-initialised layers (residual branches, head) are
    made random, so that its distributions are far from uniform."""
    spec = ModelSpec(shape=shape, num_classes=k, branching=b, parameterization="data",
                     network=get_preset("cpu-tiny").to_dict())
    torch.manual_seed(seed)
    model = build_ardm(spec)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.2)
    return model.eval()


def coarse_int(v: int, level: int, k: int, b: int) -> int:
    """x^(level) for one integer value, by definition."""
    span = min(b, k) ** (num_stages(k, b) - level)
    return span * (v // span)


def digit_probs_reference(model: ARDM, x_shown: list[int], mask: list[bool], stage: int, t: int) -> list[list[float]]:
    """p(digit | shown) for every variable, from raw logits with explicit sums (float64)."""
    k, b = model.spec.num_classes, min(model.spec.branching, model.spec.num_classes)
    s = num_stages(k, b)
    w = b ** (s - 1 - stage)
    shape = model.spec.shape
    d = len(x_shown)
    logits = model.network(
        torch.tensor(x_shown).view(1, *shape),
        torch.tensor(mask).view(1, *shape),
        torch.tensor([stage]),
        torch.tensor([stage * d + t]),
    ).double().view(d, -1)
    result = []
    for pos in range(d):
        parent = coarse_int(x_shown[pos], stage, k, b)
        valid = [parent + dig * w < k for dig in range(b)]
        if model.parameterization == "direct":
            weights = [math.exp(logits[pos, dig].item()) if valid[dig] else 0.0 for dig in range(b)]
        else:
            px = torch.softmax(logits[pos], 0).tolist()
            weights = [sum(px[v] for v in range(parent + dig * w, min(parent + (dig + 1) * w, k))) for dig in range(b)]
        total = sum(weights)
        result.append([wgt / total for wgt in weights])
    return result


def exact_nll_bits(model: ARDM, x: list[int], orders: list[list[int]]) -> float:
    """-log2 p(x | orders) in bits per image; orders[j] is the rank list sigma of stage j."""
    return sum(stage_bits(model, x, stage, ranks) for stage, ranks in enumerate(orders))


def exact_nelbo_bits(model: ARDM, x: list[int]) -> float:
    """The negative ELBO of x (bits per image): the average over all orders of every stage.

    Stages are independent, so the mean over order tuples is the sum of per-stage means.
    """
    d = len(x)
    perms = [list(p) for p in itertools.permutations(range(d))]
    s = num_stages(model.spec.num_classes, model.spec.branching)
    total = 0.0
    for stage in range(s):
        total += sum(stage_bits(model, x, stage, p) for p in perms) / len(perms)
    return total


def stage_bits(model: ARDM, x: list[int], stage: int, ranks: list[int]) -> float:
    """sum_t -log2 p(digit of x_sigma(t) | step t of stage j) under one order (ranks)."""
    k, b = model.spec.num_classes, model.spec.branching
    d = len(x)
    w = min(b, k) ** (num_stages(k, b) - 1 - stage)
    bits = 0.0
    for t in range(d):
        shown = [coarse_int(v, stage + 1 if ranks[i] < t else stage, k, b) for i, v in enumerate(x)]
        mask = [r < t for r in ranks]
        pos = ranks.index(t)
        bits -= math.log2(digit_probs_reference(model, shown, mask, stage, t)[pos][(x[pos] // w) % min(b, k)])
    return bits


def checkpoint_of(model: ARDM, path) -> object:
    """Save `model` as a checkpoint whose EMA weights are its own weights (for load_model)."""
    ema = {f"module.{k}": v for k, v in model.state_dict().items()} | {"n_averaged": torch.tensor(1)}
    return save_checkpoint({"model_spec": model.spec.to_dict(), "model": model.state_dict(), "ema": ema, "step": 1},
                           path)


def coded_tiny_images(count: int, batch_size: int) -> tuple[ARDM, np.ndarray, object]:
    """(model, images, CompressionResult): `count` random 2x2 images (K = 10) compressed by a tiny b = 3
    model at 4 calls with the naive policy: the coded file the container and device tests take apart."""
    from ardm.compression import budget_policy, compress

    model = tiny_ardm(10, 3, "data", shape=(1, 2, 2))
    images = np.random.default_rng(0).integers(0, 10, (count, 1, 2, 2)).astype(np.uint8)
    return model, images, compress(model, images, budget_policy(6, 3, 4, "naive"), order_seed=2,
                                   batch_size=batch_size)
