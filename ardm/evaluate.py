"""Test-set likelihood: the Monte Carlo negative ELBO with its standard error, the exact likelihood
of one image under one fixed order (S*D network calls, batched), and the measured likelihood under
a chunked (parallel) policy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ardm.model import unwrap
from ardm.objective import ardm_loss, sample_orders
from ardm.progress import progress as progress_bar
from ardm.sampling import check_stage_policies

# Random steps per image (times orders_per_image) for the measured bpd of the every-step policy.
FULL_BUDGET_DRAWS = 16


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error over n independent units (images), in bits per dimension.

    per_image: the n per-image values (bpd) in the order of the images, so that two measurements
    on the same images can be compared pairwise (paired_difference); () when not kept.
    """

    mean: float
    stderr: float
    n: int
    per_image: tuple[float, ...] = ()

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.stderr:.4f}"

    def to_dict(self) -> dict:
        return {"mean": self.mean, "stderr": self.stderr, "n": self.n, "per_image": list(self.per_image)}

    @classmethod
    def from_dict(cls, data: dict) -> Estimate:
        return cls(data["mean"], data["stderr"], data["n"], tuple(data.get("per_image", ())))


def paired_difference(a: Estimate, b: Estimate) -> Estimate:
    """a - b image by image (both measured on the same images, in the same order): the mean
    difference (bpd) with the standard error of the per-image differences, which leaves out the
    image-to-image spread that the two share."""
    if not a.per_image or len(a.per_image) != len(b.per_image):
        raise ValueError("a paired difference needs per-image values of the same images")
    diff = torch.tensor(a.per_image, dtype=torch.float64) - torch.tensor(b.per_image, dtype=torch.float64)
    return _over_images(diff.view(-1, 1))


@dataclass(frozen=True)
class ExactLikelihood:
    """-log2 p(x | sigma) of one image under one order, step by step.

    step_bits: (S, D) bits of the variable generated at each (stage, step); total_bits: their sum
    (bits per image); bpd: total_bits / D.
    """

    step_bits: np.ndarray
    total_bits: float
    bpd: float


def _over_images(values: torch.Tensor) -> Estimate:
    """Estimate from per-(image, draw) values (N, M): mean of the per-image means, stderr across images."""
    per_image = values.mean(1)
    n = per_image.shape[0]
    stderr = per_image.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return Estimate(mean=per_image.mean().item(), stderr=stderr, n=n, per_image=tuple(per_image.tolist()))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _as_long(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.tensor(np.asarray(images), dtype=torch.long, device=device)


@torch.no_grad()
def estimate_nelbo(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    samples_per_image: int = 4,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    desc: str = "negative ELBO",
) -> Estimate:
    """Negative ELBO of a set of images in bits per dimension, with its standard error.

    images: uint8 (N, C, H, W). Each image gets `samples_per_image` (order, stage, step) draws;
    its steps are stratified (one per 1/M of the S*D global steps, with a random offset) and its
    orders independent. The per-image means are averaged; the standard error is their standard
    deviation / sqrt(N), so it covers both image-to-image variation and Monte Carlo noise.
    desc names the work on the progress bar (ardm.progress).
    """
    core = unwrap(model)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = _device(model)
    data = _as_long(images, device)
    n, m, total = data.shape[0], samples_per_image, core.num_steps
    offsets = torch.rand(n, 1, generator=generator, dtype=torch.float64)
    steps = ((torch.arange(m, dtype=torch.float64) + offsets) / m * total).long().clamp_(max=total - 1).flatten()
    rows = torch.arange(n).repeat_interleave(m)
    per_row = torch.empty(n * m, dtype=torch.float64)
    for lo in progress_bar(range(0, n * m, batch_size), desc=desc, enabled=progress):
        idx = slice(lo, min(lo + batch_size, n * m))
        u = steps[idx].to(device)
        ranks = sample_orders(u.shape[0], core.num_variables, generator).to(device)
        out = ardm_loss(model, data[rows[idx].to(device)], ranks, u // core.num_variables, u % core.num_variables)
        per_row[idx] = out.nelbo_bpd.double().cpu()
    model.train(was_training)
    return _over_images(per_row.view(n, m))


@torch.no_grad()
def exact_likelihood(
    model: nn.Module, image: np.ndarray | torch.Tensor, ranks: torch.Tensor, batch_size: int = 256
) -> ExactLikelihood:
    """-log2 p(image | order) by running every one of the S*D steps (one network call each).

    image: (C, H, W) integers; ranks: (D,) long, ranks[k] = sigma(k) (a permutation of 0..D-1).
    The calls are batched `batch_size` steps at a time.
    """
    core = unwrap(model)
    was_training = model.training
    model.eval()
    device = _device(model)
    x = _as_long(image, device).unsqueeze(0)
    ranks = ranks.to(device)
    d, total = core.num_variables, core.num_steps
    position = ranks.argsort()  # position[t] = sigma^{-1}(t), the variable generated at step t
    bits = torch.empty(total, dtype=torch.float64)
    for lo in range(0, total, batch_size):
        u = torch.arange(lo, min(lo + batch_size, total), device=device)
        stage, t = u // d, u % d
        batch = x.expand(u.shape[0], *x.shape[1:])
        x_shown, mask = core.step_inputs(batch, ranks.expand(u.shape[0], d), stage, t)
        log_probs = model(x_shown, mask, stage, t).flatten(1, 3)  # (n, D, b)
        target = core.upscaler.digit(batch, stage.view(-1, 1, 1, 1)).flatten(1)
        k = position[t]
        rows = torch.arange(u.shape[0], device=device)
        bits[lo : lo + u.shape[0]] = (-log_probs[rows, k, target[rows, k]] / math.log(2)).double().cpu()
    model.train(was_training)
    step_bits = bits.view(core.num_stages, d).numpy()
    total_bits = float(step_bits.sum())
    return ExactLikelihood(step_bits=step_bits, total_bits=total_bits, bpd=total_bits / d)


@torch.no_grad()
def measure_policy(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    policy: Sequence[Sequence[int]],
    orders_per_image: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
    desc: str = "",
) -> Estimate:
    """Measured negative log-likelihood (bits per dimension) of images under a chunked policy: the
    one measurement of a policy's cost (`ardm budgets`, post-processing and the report all use it).

    images: uint8 (N, C, H, W); policy: one list of chunk starts per stage (see ardm.sampling).
    Per stage and chunk [a, b): one network call at step a, and every variable with
    a <= sigma(k) < b is scored from it. The bits of all chunks of all stages, / D, are one image's
    value under one random order per stage; the mean over `orders_per_image` orders per image is
    averaged over images, and the standard error is taken across images. With the same seed and
    batch size every policy sees the same orders, so policies can be compared image by image.

    The every-step policy (D chunks in every stage) costs the negative ELBO: it is measured by its
    unbiased random-step estimate (estimate_nelbo, FULL_BUDGET_DRAWS * orders_per_image draws per
    image) instead of S*D network calls per image. desc names the work on the progress bar, e.g. the
    budget and policy (ardm.budgets.measure_budget).
    """
    core = unwrap(model)
    d = core.num_variables
    stage_policies = check_stage_policies(policy, core.num_stages, d)
    if all(len(starts) == d for starts in stage_policies):
        return estimate_nelbo(model, images, FULL_BUDGET_DRAWS * orders_per_image, batch_size, seed, progress,
                              desc or "every-step policy")
    was_training = model.training
    model.eval()
    device = _device(model)
    data = _as_long(images, device)
    n, m = data.shape[0], orders_per_image
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(n).repeat_interleave(m)
    per_row = torch.empty(n * m, dtype=torch.float64)
    calls = sum(len(starts) for starts in stage_policies)
    for lo in progress_bar(range(0, n * m, batch_size), desc=desc or f"policy of {calls} calls", enabled=progress):
        x = data[rows[lo : lo + batch_size].to(device)]
        bits = torch.zeros(x.shape[0], dtype=torch.float64, device=device)
        for j, starts in enumerate(stage_policies):
            ranks = sample_orders(x.shape[0], d, generator).to(device)
            stage = torch.full((x.shape[0],), j, device=device)
            target = core.upscaler.digit(x, j).flatten(1)
            for a, b in zip(starts, [*starts[1:], d], strict=True):
                x_shown, mask = core.step_inputs(x, ranks, stage, torch.full_like(stage, a))
                log_p = model(x_shown, mask, stage, torch.full_like(stage, a)).flatten(1, 3)
                log_p = log_p.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                chunk = (ranks >= a) & (ranks < b)
                bits -= (log_p * chunk).sum(1).double() / math.log(2)
        per_row[lo : lo + x.shape[0]] = (bits / d).cpu()
    model.train(was_training)
    return _over_images(per_row.view(n, m))
