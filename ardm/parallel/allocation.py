"""Policies for upscale ARDMs: S stages of D steps each, a chunk never crossing a stage boundary.

The stages are independent DPs (one per row of the (S, D) table), so a split of the total budget
into per-stage budgets k_s costs sum_s cost_s(k_s), with cost_s(k) the stage's optimal cost with
exactly k chunks. The paper gives every stage the same budget (stage_policies); joint_allocation
chooses the split that minimises the sum.
"""

from __future__ import annotations

import operator

import numpy as np

from ardm.parallel.dp import cost_curve, optimal_policies
from ardm.parallel.policy import Policy, as_step_table


def stage_policies(step_nll: np.ndarray, budget_per_stage: int, sort_decreasing: bool = False) -> list[Policy]:
    """The optimal policy of each stage with the same budget (1..D) for every stage.

    step_nll: shape (S, D), per-step cost of stage s at step t (bits or nats). sort_decreasing
    sorts each stage's row on its own, as in optimal_policies (costs are then under the sorted
    rows). Returns S policies, policy s covering the D steps of stage s.
    """
    table = as_step_table(step_nll, ndim=2)
    return [optimal_policies(row, [budget_per_stage], sort_decreasing)[budget_per_stage] for row in table]


def _min_plus_split(curves: np.ndarray, total: int) -> list[int]:
    """Per-stage budgets k_s >= 1 with sum total minimising sum_s curves[s, k_s].

    curves: float64 (S, K+1), curves[s, k] = stage s's cost with k chunks (column 0 unused).
    Exact for any curves (convex or not): a min-plus convolution over the stages, O(S * K * total).
    """
    num_stages, width = curves.shape
    best = np.full(total + 1, np.inf)  # best[n]: cheapest way to spend n calls on the stages so far
    best[0] = 0.0
    choice = np.zeros((num_stages, total + 1), dtype=np.int64)
    for stage in range(num_stages):
        new = np.full(total + 1, np.inf)
        for k in range(1, width):
            candidate = best[: total + 1 - k] + curves[stage, k]
            better = candidate < new[k:]
            new[k:][better] = candidate[better]
            choice[stage, k:][better] = k
        best = new
    split = [0] * num_stages
    remaining = total
    for stage in reversed(range(num_stages)):
        split[stage] = int(choice[stage, remaining])
        remaining -= split[stage]
    return split


def joint_allocation(step_nll: np.ndarray, total_budget: int, sort_decreasing: bool = False) -> list[Policy]:
    """Optimal policies under one total budget shared by the stages (each stage gets >= 1 call).

    step_nll: shape (S, D), per-step cost of stage s at step t (bits or nats); total_budget in
    S..S*D. Chooses k_s (1 <= k_s <= D, sum k_s = total_budget) minimising the summed optimal
    cost exactly, and returns the S optimal policies (policy s has budget k_s). sort_decreasing
    sorts each row on its own first, as in optimal_policies (costs are then under the sorted rows).

    Each stage's cost-vs-budget curve needs the DP's layers up to min(D, total - S + 1), so this
    costs about S such DPs (no argmin table kept) plus S read-back runs.
    """
    table = as_step_table(step_nll, ndim=2)
    if sort_decreasing:
        table = np.ascontiguousarray(np.sort(table, axis=1)[:, ::-1])
    num_stages, num_steps = table.shape
    total = operator.index(total_budget)
    if not num_stages <= total <= num_stages * num_steps:
        raise ValueError(f"total_budget {total} is outside S..S*D = {num_stages}..{num_stages * num_steps}")
    max_budget = min(num_steps, total - (num_stages - 1))
    curves = np.stack([cost_curve(row, max_budget) for row in table])
    split = _min_plus_split(curves, total)
    return [optimal_policies(row, [k])[k] for row, k in zip(table, split, strict=True)]
