"""Parallel-generation policies: the fast DP against brute force and the direct DP, and its API."""

import itertools
import json
import math

import numpy as np
import pytest

from ardm.parallel import (
    Policy,
    joint_allocation,
    naive_policy,
    optimal_policies,
    policy_cost,
    reference_policies,
    stage_policies,
)
from ardm.parallel.dp import _layer_bounds, _layered_dp, _read_back, cost_curve

RTOL = 1e-12


def brute_force_costs(table: np.ndarray) -> dict[int, float]:
    """Minimum cost over every policy with k chunks, for every k = 1..D (all subsets of 1..D-1)."""
    inner = range(1, table.size)
    return {
        k: min(policy_cost(table, np.array((0, *rest))) for rest in itertools.combinations(inner, k - 1))
        for k in range(1, table.size + 1)
    }


def small_tables() -> list[np.ndarray]:
    """Non-monotone, tied, constant, zero and monotone tables of D = 1..10 steps."""
    rng = np.random.default_rng(0)
    tables = [np.array([2.5]), np.zeros(7), np.full(8, 3.0), np.arange(9, 0, -1.0), np.arange(1.0, 10.0)]
    for num_steps in range(2, 11):
        tables.append(rng.random(num_steps) * 4)
        tables.append(rng.integers(0, 3, num_steps).astype(float))  # many ties
        tables.append(np.sort(rng.integers(0, 4, num_steps).astype(float))[::-1])  # sorted, with ties
        tables.append(np.sort(rng.random(num_steps))[::-1])
    return tables


def kernel_policies(table: np.ndarray, budgets: list[int], monotone: bool) -> dict[int, Policy]:
    """optimal_policies with the DP kernel forced (the hull is only valid on non-increasing tables)."""
    hi = _layer_bounds(budgets, table.size)
    _, arg, offsets = _layered_dp(table, hi, True, monotone)
    policies = {}
    for k in budgets:
        starts = _read_back(arg, offsets, k, table.size)
        policies[k] = Policy(starts=starts, cost=policy_cost(table, starts))
    return policies


def assert_valid(policies: dict[int, Policy], table: np.ndarray) -> None:
    for k, policy in policies.items():
        assert policy.budget == k
        assert policy.starts[0] == 0 and np.all(np.diff(policy.starts) > 0) and policy.starts[-1] < table.size
        assert policy_cost(table, policy.starts) == policy.cost


def realistic_table(num_steps: int, rng: np.random.Generator) -> np.ndarray:
    """Shaped like an ARDM table: decreasing from ~8 to ~1 bits, plus estimation noise."""
    x = np.linspace(0.0, 1.0, num_steps)
    return np.clip(1 + 7 * (1 - x) ** 4 + rng.normal(0, 0.3, num_steps), 0, None)


@pytest.mark.parametrize("table", small_tables(), ids=lambda t: f"D{t.size}")
def test_matches_brute_force_for_every_budget(table):
    expected = brute_force_costs(table)
    budgets = list(range(1, table.size + 1))
    candidates = [optimal_policies(table, budgets), reference_policies(table, budgets)]
    candidates.append(kernel_policies(table, budgets, monotone=False))
    if np.all(np.diff(table) <= 0):
        candidates.append(kernel_policies(table, budgets, monotone=True))
    for policies in candidates:
        assert_valid(policies, table)
        for k in budgets:
            assert policies[k].cost == pytest.approx(expected[k], rel=RTOL, abs=RTOL)


@pytest.mark.parametrize("num_steps", [600, 1000])
@pytest.mark.parametrize("shape", ["realistic", "sorted", "uniform", "ties", "sorted-ties"])
def test_fast_path_matches_reference(num_steps, shape):
    rng = np.random.default_rng(num_steps)
    table = {
        "realistic": realistic_table(num_steps, rng),
        "sorted": np.sort(realistic_table(num_steps, rng))[::-1],
        "uniform": rng.random(num_steps),
        "ties": rng.integers(0, 4, num_steps).astype(float),
        "sorted-ties": np.sort(rng.integers(0, 4, num_steps).astype(float))[::-1],
    }[shape]
    budgets = [1, 2, 7, 50, 100, 150]
    reference = reference_policies(table, budgets)
    for policies in (optimal_policies(table, budgets), kernel_policies(table, budgets, monotone=False)):
        assert_valid(policies, table)
        for k in budgets:
            assert policies[k].cost == pytest.approx(reference[k].cost, rel=1e-10)


def test_budgets_near_the_number_of_steps():
    # The layer ranges shrink to a single t when the budget is close to D.
    table = realistic_table(300, np.random.default_rng(1))
    budgets = [3, 298, 299, 300]
    fast, reference = optimal_policies(table, budgets), reference_policies(table, budgets)
    for k in budgets:
        assert fast[k].cost == pytest.approx(reference[k].cost, rel=1e-10)


@pytest.mark.parametrize("sort_table", [False, True])
def test_cost_curve_matches_reference_for_every_budget(sort_table):
    table = realistic_table(150, np.random.default_rng(7))
    table = np.sort(table)[::-1] if sort_table else table
    reference = reference_policies(table, range(1, 151))
    curve = cost_curve(table, 150)
    assert curve[0] == np.inf
    np.testing.assert_allclose(curve[1:], [reference[k].cost for k in range(1, 151)], rtol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_budget_extremes(seed):
    table = np.random.default_rng(seed).random(50) * 5
    policies = optimal_policies(table, [1, 50])
    assert policies[50].cost == pytest.approx(table.sum(), rel=RTOL)  # every step its own call
    assert np.array_equal(policies[50].starts, np.arange(50))
    assert policies[1].cost == 50 * table[0]


def test_non_increasing_table_cost_falls_and_is_convex_in_budget():
    table = np.sort(realistic_table(400, np.random.default_rng(2)))[::-1]
    policies = optimal_policies(table, range(1, 401))
    costs = np.array([policies[k].cost for k in range(1, 401)])
    assert np.all(np.diff(costs) <= 1e-9)
    assert np.all(np.diff(costs, 2) >= -1e-9)  # the cost matrix is Monge, so cost_k(D) is convex in k


def test_more_chunks_can_cost_more_on_a_non_monotone_table():
    # Exactly k chunks: the extra start must land on an expensive step.
    table = np.array([0.0, 5.0, 5.0])
    policies = optimal_policies(table, [1, 2, 3])
    assert [policies[k].cost for k in (1, 2, 3)] == [0.0, 5.0, 10.0]


def test_sort_decreasing_runs_on_the_sorted_table():
    table = realistic_table(200, np.random.default_rng(3))
    ordered = np.sort(table)[::-1]
    budgets = [1, 5, 40]
    sorted_policies = optimal_policies(table, budgets, sort_decreasing=True)
    on_ordered = optimal_policies(ordered, budgets)
    for k in budgets:
        assert sorted_policies[k].cost == on_ordered[k].cost
        assert sorted_policies[k].cost == policy_cost(ordered, sorted_policies[k].starts)
    # The original table is untouched and gives another (here different) cost for the same starts.
    assert policy_cost(table, sorted_policies[40].starts) != sorted_policies[40].cost


@pytest.mark.parametrize(
    "table", [np.ones((2, 3)), np.array([]), np.array([1.0, np.nan]), np.array([1.0, np.inf]), np.array([1.0, -0.1])]
)
def test_invalid_tables_are_rejected(table):
    with pytest.raises(ValueError, match="step_nll"):
        optimal_policies(table, [1])
    with pytest.raises(ValueError, match="step_nll"):
        reference_policies(table, [1])


@pytest.mark.parametrize("budget", [0, -1, 6])
def test_budgets_outside_one_to_d_are_rejected(budget):
    with pytest.raises(ValueError, match=f"budget {budget} .*D=5"):
        optimal_policies(np.ones(5), [1, budget])
    with pytest.raises(ValueError, match=f"budget {budget}"):
        naive_policy(5, budget)


def test_policy_round_trips_through_json_and_stays_immutable():
    policy = optimal_policies(np.array([3.0, 1.0, 2.0, 0.5]), [2])[2]
    restored = Policy.from_dict(json.loads(json.dumps(policy.to_dict())))
    assert restored == policy and hash(restored) == hash(policy)
    assert restored.starts.dtype == np.int64
    assert policy.chunk_sizes(4).sum() == 4 and policy.chunk_sizes(4).size == policy.budget
    with pytest.raises(ValueError):
        policy.starts[0] = 1
    unknown = naive_policy(10, 3)
    assert math.isnan(unknown.cost) and unknown.to_dict()["cost"] is None
    assert Policy.from_dict(json.loads(json.dumps(unknown.to_dict()))) == unknown


@pytest.mark.parametrize("starts", [[], [1, 2], [0, 2, 2], [0, 3, 1]])
def test_policy_rejects_bad_starts(starts):
    with pytest.raises(ValueError, match="starts"):
        Policy(starts=np.array(starts, dtype=np.int64), cost=0.0)


def test_policy_cost_rejects_starts_past_the_table():
    with pytest.raises(ValueError, match="num_steps"):
        policy_cost(np.ones(3), np.array([0, 3]))


@pytest.mark.parametrize("num_steps", [1, 2, 7, 10, 100, 3072])
def test_naive_policy_is_evenly_spaced(num_steps):
    table = np.linspace(5, 1, num_steps)
    budgets = {1, 2, 3, num_steps // 3, num_steps // 2 + 1, num_steps - 1, num_steps}
    for budget in budgets & set(range(1, num_steps + 1)):
        policy = naive_policy(num_steps, budget, table)
        assert policy.budget == budget and policy.starts[0] == 0 and np.all(np.diff(policy.starts) > 0)
        sizes = policy.chunk_sizes(num_steps)
        assert sizes.max() - sizes.min() <= 1
        assert policy.cost == policy_cost(table, policy.starts)
    with pytest.raises(ValueError, match="num_steps"):
        naive_policy(num_steps, 1, np.ones(num_steps + 1))


def test_stage_policies_solve_each_stage():
    table = np.random.default_rng(4).random((3, 40))
    policies = stage_policies(table, 6)
    assert [p.cost for p in policies] == [optimal_policies(row, [6])[6].cost for row in table]
    sorted_policies = stage_policies(table, 6, sort_decreasing=True)
    assert [p.cost for p in sorted_policies] == [optimal_policies(row, [6], True)[6].cost for row in table]
    with pytest.raises(ValueError, match="budget 41"):
        stage_policies(table, 41)


@pytest.mark.parametrize(("num_stages", "num_steps"), [(1, 5), (2, 4), (3, 3), (2, 5)])
@pytest.mark.parametrize("integer", [False, True])
def test_joint_allocation_matches_brute_force(num_stages, num_steps, integer):
    rng = np.random.default_rng(10 * num_stages + num_steps)
    shape = (num_stages, num_steps)
    table = rng.integers(0, 3, shape).astype(float) if integer else rng.random(shape)
    for sort_decreasing in (False, True):
        rows = np.sort(table, axis=1)[:, ::-1] if sort_decreasing else table
        curves = [brute_force_costs(row) for row in rows]
        for total in range(num_stages, num_stages * num_steps + 1):
            expected = min(
                sum(curve[k] for curve, k in zip(curves, split, strict=True))
                for split in itertools.product(range(1, num_steps + 1), repeat=num_stages)
                if sum(split) == total
            )
            policies = joint_allocation(table, total, sort_decreasing)
            assert len(policies) == num_stages and sum(p.budget for p in policies) == total
            for policy, row in zip(policies, rows, strict=True):
                assert policy_cost(row, policy.starts) == policy.cost
            assert sum(p.cost for p in policies) == pytest.approx(expected, rel=RTOL, abs=RTOL)


def test_joint_allocation_against_reference_curves():
    rng = np.random.default_rng(5)
    table = np.stack([realistic_table(120, rng), 0.5 * realistic_table(120, rng), rng.random(120)])
    total = 90
    curves = [reference_policies(row, range(1, 89)) for row in table]
    expected = min(
        curves[0][a].cost + curves[1][b].cost + curves[2][total - a - b].cost
        for a in range(1, 89)
        for b in range(1, 90 - a)
    )
    policies = joint_allocation(table, total)
    assert sum(p.cost for p in policies) == pytest.approx(expected, rel=1e-10)
    equal_split = stage_policies(table, total // 3)
    assert sum(p.cost for p in policies) <= sum(p.cost for p in equal_split) * (1 + 1e-12)


def test_joint_allocation_with_one_stage_is_the_stage_policy():
    table = realistic_table(80, np.random.default_rng(6))[None]
    assert joint_allocation(table, 17) == stage_policies(table, 17)


@pytest.mark.parametrize("total", [1, 9])
def test_joint_allocation_rejects_infeasible_totals(total):
    with pytest.raises(ValueError, match=f"total_budget {total}"):
        joint_allocation(np.ones((2, 4)), total)
