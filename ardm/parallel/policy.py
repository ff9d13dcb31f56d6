"""Policies (where each network call of a parallel generation starts) and their expected cost.

A policy with budget k splits the D generation steps 0..D-1 into k chunks at the starts
0 = s_0 < s_1 < ... < s_{k-1} < D (with s_k = D). Chunk j is one network call at step s_j that
predicts the variables of steps s_j .. s_{j+1}-1 independently, so under a per-step table
l[0..D-1] (expected -log p of step t's variable given t observed ones, in bits or nats) its
expected cost is

    cost = sum_j (s_{j+1} - s_j) * l[s_j]

in the units of l.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Policy:
    """Chunk starts of a parallel-generation policy and its expected cost.

    starts: int64 array of shape (budget,), strictly increasing, starts[0] == 0 (read-only).
    cost: expected cost in the units of the step table it was computed on (nan when unknown).
    """

    starts: np.ndarray
    cost: float

    def __post_init__(self) -> None:
        starts = np.array(self.starts, dtype=np.int64).reshape(-1)
        if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0):
            raise ValueError(f"policy starts must be strictly increasing from 0, got {starts.tolist()}")
        # Frozen means immutable: a writeable array field could still be changed in place.
        starts.flags.writeable = False
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "cost", float(self.cost))

    # The generated __eq__/__hash__ would compare/hash the array field, which numpy refuses.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Policy):
            return NotImplemented
        same_cost = self.cost == other.cost or (math.isnan(self.cost) and math.isnan(other.cost))
        return same_cost and np.array_equal(self.starts, other.starts)

    def __hash__(self) -> int:
        return hash((self.starts.tobytes(), self.cost))

    @property
    def budget(self) -> int:
        """Number of chunks (network calls)."""
        return int(self.starts.size)

    def chunk_sizes(self, num_steps: int) -> np.ndarray:
        """Steps per chunk, int64 array of shape (budget,) summing to num_steps (D)."""
        if num_steps <= self.starts[-1]:
            raise ValueError(f"num_steps={num_steps} must exceed the last start {int(self.starts[-1])}")
        return np.diff(np.append(self.starts, num_steps))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: {"starts": [int, ...], "cost": float or None (unknown)}."""
        return {"starts": self.starts.tolist(), "cost": None if math.isnan(self.cost) else self.cost}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Inverse of to_dict."""
        cost = data.get("cost")
        return cls(starts=np.asarray(data["starts"], dtype=np.int64), cost=math.nan if cost is None else cost)


def as_step_table(step_nll: np.ndarray, ndim: int = 1) -> np.ndarray:
    """Validated float64 copy of a per-step table: shape (D,) for ndim=1, (S, D) for ndim=2.

    Raises ValueError unless the table has that many dimensions, at least one step, and only
    finite non-negative entries.
    """
    table = np.array(step_nll, dtype=np.float64)
    if table.ndim != ndim or table.size == 0:
        raise ValueError(f"step_nll must be a non-empty {ndim}-D array, got shape {table.shape}")
    if not np.all(np.isfinite(table)):
        raise ValueError("step_nll must be finite")
    if np.any(table < 0):
        raise ValueError("step_nll must be non-negative")
    return table


def as_budgets(budgets: Iterable[int], num_steps: int) -> list[int]:
    """Sorted distinct budgets, each checked to be an integer in 1..num_steps."""
    checked = set()
    for budget in budgets:
        value = operator.index(budget)
        if not 1 <= value <= num_steps:
            raise ValueError(f"budget {value} is outside 1..D with D={num_steps}")
        checked.add(value)
    return sorted(checked)


def policy_cost(step_nll: np.ndarray, starts: np.ndarray) -> float:
    """Expected cost sum_j (s_{j+1} - s_j) * l[s_j] of the chunk starts on the table l.

    step_nll: shape (D,), per-step cost (bits or nats); starts: shape (k,), strictly increasing
    from 0, all < D. Returns a float in the units of step_nll, summed with math.fsum so that the
    value does not depend on the order of the chunks.
    """
    table = as_step_table(step_nll)
    policy = Policy(starts=starts, cost=math.nan)  # validates the starts
    sizes = policy.chunk_sizes(table.size)
    return math.fsum((sizes * table[policy.starts]).tolist())


def naive_policy(num_steps: int, budget: int, step_nll: np.ndarray | None = None) -> Policy:
    """Evenly spaced chunk starts: s_j = round(j * D / k) for j = 0..k-1 (halves round up).

    This is np.round(np.linspace(0, D, k, endpoint=False)) computed in exact integer arithmetic,
    so the starts are strictly increasing for every 1 <= k <= D (consecutive starts differ by at
    least floor(D / k) >= 1), with no floating-point rounding at exact halves. The cost is that
    of the policy on step_nll (shape (D,)) when given, else nan.
    """
    (budget,) = as_budgets([budget], num_steps)
    j = np.arange(budget, dtype=np.int64)
    starts = (2 * j * num_steps + budget) // (2 * budget)
    if step_nll is None:
        return Policy(starts=starts, cost=math.nan)
    table = as_step_table(step_nll)
    if table.size != num_steps:
        raise ValueError(f"step_nll has {table.size} steps, expected num_steps={num_steps}")
    return Policy(starts=starts, cost=policy_cost(table, starts))
