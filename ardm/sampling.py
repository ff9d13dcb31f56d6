"""Ancestral sampling from an ARDM, one variable per network call or in chunks (a policy).

A policy for one stage is the sorted list of chunk starts 0 = s_0 < s_1 < ... < s_k < D: one
network call at step s_i generates, independently, every variable with s_i <= sigma(k) < s_{i+1}.
The default policy is every step (D calls per stage, S*D in all).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ardm.model import unwrap
from ardm.objective import sample_orders
from ardm.progress import progress as progress_bar


def check_stage_policies(
    policy: Sequence[Sequence[int]] | None, num_stages: int, num_variables: int
) -> list[list[int]]:
    """One list of chunk starts (or an ardm.parallel.Policy) per stage, validated: strictly
    increasing ints in 0..D-1 from 0.

    None means one variable per call: starts 0..D-1 in every stage.
    """
    if policy is None:
        return [list(range(num_variables))] * num_stages
    if len(policy) != num_stages:
        raise ValueError(f"policy has {len(policy)} stages, the model has {num_stages}")
    checked = []
    for stage_policy in policy:
        starts = [int(s) for s in getattr(stage_policy, "starts", stage_policy)]  # a Policy or a list
        if not starts or starts[0] != 0:
            raise ValueError(f"a policy must start at step 0, got {starts[:3]}...")
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)) or starts[-1] >= num_variables:
            raise ValueError(f"policy starts must be strictly increasing and below D={num_variables}")
        checked.append(starts)
    return checked


@torch.no_grad()
def sample(
    model: nn.Module,
    num_samples: int,
    policy: Sequence[Sequence[int]] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "",
) -> torch.Tensor:
    """Draw images from the model: uint8 (num_samples, C, H, W) on the CPU.

    policy: one list of chunk starts per stage (S lists), or None for one variable per call.
    Every sample gets its own random order per stage; `seed` fixes orders and draws. desc names the
    work on the progress bar (ardm.progress).
    """
    core = unwrap(model)
    d, num_stages = core.num_variables, core.num_stages
    stage_policies = check_stage_policies(policy, num_stages, d)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    out = []
    calls = sum(len(p) for p in stage_policies)
    desc = desc or f"sampling {num_samples} images, {calls} calls each"
    with progress_bar(total=calls * -(-num_samples // batch_size), desc=desc, enabled=progress) as bar:
        for lo in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - lo)
            x = torch.zeros(n, *core.spec.shape, dtype=torch.long, device=device)  # x^(0): absorbing
            for j, starts in enumerate(stage_policies):
                x = _sample_stage(model, x, j, starts, generator)
                bar.update(len(starts))
            out.append(x.cpu())
    model.train(was_training)
    return torch.cat(out).to(torch.uint8)


def _sample_stage(
    model: nn.Module, x: torch.Tensor, stage: int, starts: list[int], generator: torch.Generator
) -> torch.Tensor:
    """Refine x = x^(j) (B, C, H, W) into x^(j+1) with one call per chunk."""
    core = unwrap(model)
    n, d = x.shape[0], core.num_variables
    device = x.device
    ranks = sample_orders(n, d, generator).to(device).view_as(x)
    stage_t = torch.full((n,), stage, dtype=torch.long, device=device)
    for a, b in zip(starts, [*starts[1:], d], strict=True):
        mask = ranks < a
        log_probs = model(x, mask, stage_t, torch.full_like(stage_t, a))
        # Gumbel-max draws with our generator; impossible digits (log p = -1e30) never win.
        uniform = torch.rand(log_probs.shape, generator=generator).to(device).clamp_(min=1e-20)
        digit = (log_probs - torch.log(-torch.log(uniform))).argmax(-1)
        chunk = (ranks >= a) & (ranks < b)
        x = torch.where(chunk, core.upscaler.refine(x, digit, stage), x)
    return x
