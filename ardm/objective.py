"""The ARDM training objective: one random (order, stage, step) per example, one network call.

For data x with D variables and S stages, an example draws an order sigma (a uniform random
permutation), a stage j and a step t, and is scored on every variable not yet generated:

    L(x) = -(S*D / (D - t)) * sum_{k : sigma(k) >= t} log p(digit_j(x_k) | x shown at (j, t))

E_{sigma,j,t}[L(x)] is the negative ELBO (nats per image), an upper bound on -log p(x);
dividing by D ln 2 gives bits per dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ardm.model import unwrap


@dataclass
class Loss:
    """Result of one objective evaluation on a batch of B examples.

    loss: scalar to minimise, mean negative ELBO (bpd) + ce_weight * mean auxiliary cross-entropy
    (the authors' `ce`: -log2 p summed over the variables not yet generated, divided by D, so bits
    per dimension with no 1/(D - t) reweighting); nelbo_bpd: (B,) unbiased per-example negative ELBO estimates in
    bits per dimension; step_bits: (B,) mean -log2 p of the variables still to generate, an
    unbiased estimate of the per-step component l_t (bits per variable).
    """

    loss: torch.Tensor
    nelbo_bpd: torch.Tensor
    step_bits: torch.Tensor


def sample_orders(batch: int, num_variables: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform random orders as ranks: (batch, D) long, ranks[b, k] = sigma(k) in 0..D-1."""
    scores = torch.rand(batch, num_variables, generator=generator)
    return scores.argsort(dim=1).argsort(dim=1)


def sample_steps(
    batch: int, num_stages: int, num_variables: int, generator: torch.Generator, stratified: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (stage, t): (batch,) long each, stage in 0..S-1 and t in 0..D-1.

    Each example's global step u = stage*D + t is uniform on 0..S*D-1. Stratified sampling
    draws one shared offset U and takes u_b = floor((b + U) / batch * S*D), so a batch covers
    the steps evenly (antithetic) while every u_b stays marginally uniform.
    """
    total = num_stages * num_variables
    if stratified:
        offset = torch.rand((), generator=generator, dtype=torch.float64)
        u = ((torch.arange(batch, dtype=torch.float64) + offset) / batch * total).long().clamp_(max=total - 1)
    else:
        u = torch.randint(total, (batch,), generator=generator)
    return u // num_variables, u % num_variables


def ardm_loss(
    model: nn.Module,
    x: torch.Tensor,
    ranks: torch.Tensor,
    stage: torch.Tensor,
    t: torch.Tensor,
    ce_weight: float = 0.0,
) -> Loss:
    """The objective at given orders and steps (deterministic given its inputs).

    model: an ARDM (or a DDP/compiled wrapper of one); x: (B, C, H, W) long data in 0..K-1;
    ranks: (B, D) long orders; stage, t: (B,) long. ce_weight scales the unweighted masked
    cross-entropy that the authors add for images (0.001): its sum over the not-yet-generated
    variables divided by D, in bits (their `log_prob / D / ln 2`), not a mean per variable.
    """
    core = unwrap(model)
    d, s = core.num_variables, core.num_stages
    x_shown, mask = core.step_inputs(x, ranks, stage, t)
    log_probs = model(x_shown, mask, stage, t)
    target = core.upscaler.digit(x, stage.view(-1, 1, 1, 1))
    log_p = torch.gather(log_probs, -1, target.unsqueeze(-1)).squeeze(-1)
    nll_nats = -(log_p * (~mask)).flatten(1).sum(1)
    remaining = (d - t).to(nll_nats.dtype)
    nelbo_bpd = nll_nats * (s * d) / remaining / (d * math.log(2))
    step_bits = nll_nats / remaining / math.log(2)
    ce_bpd = nll_nats / (d * math.log(2))
    loss = nelbo_bpd.mean() + ce_weight * ce_bpd.mean()
    return Loss(loss=loss, nelbo_bpd=nelbo_bpd.detach(), step_bits=step_bits.detach())


def training_loss(
    model: nn.Module,
    x: torch.Tensor,
    generator: torch.Generator,
    ce_weight: float = 0.0,
    stratified: bool = True,
) -> Loss:
    """Draw orders and steps from `generator` (CPU) and evaluate `ardm_loss` on x (B, C, H, W)."""
    core = unwrap(model)
    batch = x.shape[0]
    ranks = sample_orders(batch, core.num_variables, generator).to(x.device)
    stage, t = (v.to(x.device) for v in sample_steps(batch, core.num_stages, core.num_variables, generator, stratified))
    return ardm_loss(model, x, ranks, stage, t, ce_weight)
