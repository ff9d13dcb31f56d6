"""A codec's policy from a budget of network calls: the chunk starts of every stage."""

from __future__ import annotations

import numpy as np

from ardm.budgets import POLICIES, budget_policies, check_budgets, split_evenly
from ardm.parallel import naive_policy


def budget_policy(
    budget: int,
    num_stages: int,
    num_variables: int,
    name: str = "optimal",
    step_nll: np.ndarray | None = None,
    sort_decreasing: bool = True,
) -> list[list[int]]:
    """Chunk starts per stage (S lists) for `budget` total network calls (S <= budget <= S*D).

    name: "naive" (evenly spaced chunks; no table needed), "optimal" (the paper's DP, the budget
    split evenly over stages) or "optimal-joint" (the split optimised too; "optimal" when S = 1),
    the last two on step_nll, the (S, D) per-step table in bits (ardm.tables.StepTable.matrix).
    Raises ValueError for a budget out of range, an unknown name or a missing or misshapen table.
    """
    check_budgets([budget], num_stages, num_variables)
    if name not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {name!r}")
    if name == "naive":
        return [naive_policy(num_variables, k).starts.tolist() for k in split_evenly(budget, num_stages)]
    if step_nll is None:
        raise ValueError(f"the {name} policy needs a step table")
    table = np.asarray(step_nll, dtype=np.float64)
    if table.shape != (num_stages, num_variables):
        raise ValueError(f"step table has shape {table.shape}, the model needs {(num_stages, num_variables)}")
    name = "optimal" if num_stages == 1 else name
    return budget_policies(table, [budget], sort_decreasing)[budget, name]
