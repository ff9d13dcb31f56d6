"""Exact optimal policies for every budget: the layered dynamic program over chunk starts.

With cost_0(0) = 0 and cost_0(t) = inf for t > 0, the cheapest way to cover steps 0..t-1 with
exactly k chunks is

    cost_k(t) = min_{s < t} cost_{k-1}(s) + (t - s) * l[s],        k <= t <= D,

and the policy with budget k is read back from the argmins starting at cost_k(D). For a fixed
layer k every s is a line in t (slope l[s], value cost_{k-1}(s) at t = s), so a layer is a lower
envelope of lines queried at t = k..D, with line s usable from t = s + 1 on. Two exact ways to
evaluate it, both O(D) or O(D log D) per layer instead of the O(D^2) of the direct minimum:

- non-increasing l (a sorted table): lines arrive in order of non-increasing slope and queries
  rise, so a monotone convex-hull deque gives each layer in amortised O(D);
- any other table: a Li Chao tree over t in [k, D] (each node keeps the line that is lowest at
  its midpoint) gives each layer in O(D log D); a line already beaten, at its first usable t, by
  a no steeper line is never inserted (on a noisy ARDM-like table over 90% of them past the
  first layers). The table need not be monotone, so "exactly k chunks" matters: with a
  non-monotone l more chunks can cost more.

Every layer up to max(budgets) is needed anyway, so all budgets come out of one pass. Layer k is
only evaluated for the t that some requested budget K >= k can reach, t <= D - (K - k), which
bounds the argmin table (kept for the read-back) at sum_k of those widths int32 entries.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numba import njit

from ardm.parallel.policy import Policy, as_budgets, as_step_table, policy_cost

# Elements of one (t, s) block in the reference DP: small enough to stay in cache (measured
# ~5x faster than whole-layer blocks at D = 3072), large enough to amortise NumPy's call overhead.
_REFERENCE_BLOCK = 1 << 17


@njit(cache=True, nogil=True)
def _layer_hull(nll, prev, cur, lo, hi, arg, base, store, deque, intercept):
    """One layer for non-increasing nll: cur[t] for t in lo..hi from prev (= cost_{k-1}).

    Lines s = lo-1 .. hi-1 enter in order of non-increasing slope nll[s]; each is best as t grows
    large, so it joins at the back of the deque after dropping the lines it makes useless, and the
    front is dropped once its successor is as good at the current t (queries only rise).
    """
    head = 0
    tail = 0
    for t in range(lo, hi + 1):
        s = t - 1
        if prev[s] < np.inf:
            slope = nll[s]
            intercept[s] = prev[s] - s * slope
            keep = True
            while tail > head:
                s2 = deque[tail - 1]
                if nll[s2] == slope:  # parallel: only the lower one can ever be best
                    if intercept[s] <= intercept[s2]:
                        tail -= 1
                        continue
                    keep = False
                    break
                if tail - head < 2:
                    break
                s1 = deque[tail - 2]
                # s2 is useless when the new line crosses s1 no later than s2 does:
                # x(s1, s) <= x(s1, s2), cross-multiplied by the positive slope gaps.
                lhs = (intercept[s] - intercept[s1]) * (nll[s1] - nll[s2])
                rhs = (intercept[s2] - intercept[s1]) * (nll[s1] - slope)
                if lhs <= rhs:
                    tail -= 1
                else:
                    break
            if keep:
                deque[tail] = s
                tail += 1
        while tail - head >= 2:
            a = deque[head]
            b = deque[head + 1]
            if prev[b] + (t - b) * nll[b] <= prev[a] + (t - a) * nll[a]:
                head += 1
            else:
                break
        best = deque[head]
        # Same expression as the reference DP, so equal argmins give bit-identical costs.
        cur[t] = prev[best] + (t - best) * nll[best]
        if store:
            arg[base + t - lo] = best


@njit(cache=True, nogil=True)
def _layer_lichao(nll, prev, cur, lo, hi, arg, base, store, tree):
    """One layer for any nll: cur[t] for t in lo..hi from prev, with a Li Chao tree over lo..hi.

    Node i covers an interval [a, b] (children 2i, 2i+1 split it at the midpoint m) and holds the
    line lowest at m among those that reached it; the loser goes down to the one half where it can
    still be lowest. Empty nodes (-1) have empty subtrees, so a query stops at the first one.
    Line s = t-1 is first compared with the envelope of the earlier lines at t: if the best of
    those is no higher there and no steeper, it stays below line s for every later t as well, so
    line s is never inserted (with a noisy table this skips many of the insertions).
    """
    tree[: 4 * (hi - lo + 1)] = -1
    for t in range(lo, hi + 1):
        node = 1
        a = lo
        b = hi
        best = -1
        value = np.inf
        while True:
            held = tree[node]
            if held < 0:
                break
            v = prev[held] + (t - held) * nll[held]
            if v < value:
                value = v
                best = held
            if a == b:
                break
            m = (a + b) >> 1
            if t <= m:
                node = 2 * node
                b = m
            else:
                node = 2 * node + 1
                a = m + 1
        new = t - 1
        if prev[new] < np.inf:
            v = prev[new] + (t - new) * nll[new]
            if best < 0 or value > v or nll[best] > nll[new]:
                _lichao_insert(nll, prev, tree, lo, hi, new)
            if v < value:
                value = v
                best = new
        cur[t] = value
        if store:
            arg[base + t - lo] = best


@njit(cache=True, nogil=True)
def _lichao_insert(nll, prev, tree, lo, hi, new):
    """Insert line new (value prev[new] + (t - new) * nll[new]) into the Li Chao tree over lo..hi."""
    node = 1
    a = lo
    b = hi
    while True:
        held = tree[node]
        if held < 0:
            tree[node] = new
            return
        m = (a + b) >> 1
        if prev[new] + (m - new) * nll[new] < prev[held] + (m - held) * nll[held]:
            tree[node] = new
            new, held = held, new
        if a == b:
            return
        if prev[new] + (a - new) * nll[new] < prev[held] + (a - held) * nll[held]:
            node = 2 * node
            b = m
        elif prev[new] + (b - new) * nll[new] < prev[held] + (b - held) * nll[held]:
            node = 2 * node + 1
            a = m + 1
        else:
            return


@njit(cache=True, nogil=True)
def _layered_dp(nll, hi, store, monotone):
    """Layers k = 1..K of the DP, layer k over t in k..hi[k] (hi: int64 (K+1,), hi[k] <= hi[k-1]+1).

    Returns (end, arg, offsets): end[k] = cost_k(hi[k]) (float64 (K+1,)); if store, the argmin
    s of layer k at t is arg[offsets[k] + t - k] (int32), else arg is empty.
    """
    num_steps = nll.shape[0]
    num_layers = hi.shape[0] - 1
    prev = np.full(num_steps + 1, np.inf)
    prev[0] = 0.0
    cur = np.full(num_steps + 1, np.inf)
    offsets = np.zeros(num_layers + 2, dtype=np.int64)
    if store:
        for k in range(1, num_layers + 1):
            offsets[k + 1] = offsets[k] + hi[k] - k + 1
    arg = np.empty(offsets[num_layers + 1], dtype=np.int32)
    end = np.full(num_layers + 1, np.inf)
    end[0] = prev[hi[0]]
    scratch = np.empty(4 * (num_steps + 1), dtype=np.int64)
    intercept = np.empty(num_steps + 1)
    for k in range(1, num_layers + 1):
        # Layer k reads prev only at s in k-1..hi[k]-1, all written by layer k-1 (or the init).
        if monotone:
            _layer_hull(nll, prev, cur, k, hi[k], arg, offsets[k], store, scratch, intercept)
        else:
            _layer_lichao(nll, prev, cur, k, hi[k], arg, offsets[k], store, scratch)
        end[k] = cur[hi[k]]
        prev, cur = cur, prev
    return end, arg, offsets


def _read_back(arg: np.ndarray, offsets: np.ndarray, budget: int, num_steps: int) -> np.ndarray:
    """Chunk starts (int64 (budget,)) of the optimal policy ending at cost_budget(D)."""
    starts = np.empty(budget, dtype=np.int64)
    t = num_steps
    for k in range(budget, 0, -1):
        t = int(arg[offsets[k] + t - k])
        starts[k - 1] = t
    return starts


def _layer_bounds(budgets: list[int], num_steps: int) -> np.ndarray:
    """hi[k] = D - (K_k - k) with K_k the smallest requested budget >= k (int64 (max+1,)).

    A budget K reaches layer k only at t <= D - (K - k) (each later chunk takes a step).
    """
    ks = np.asarray(budgets, dtype=np.int64)
    layers = np.arange(ks[-1] + 1, dtype=np.int64)
    next_budget = ks[np.searchsorted(ks, layers)]
    return num_steps - next_budget + layers


def _is_non_increasing(table: np.ndarray) -> bool:
    return bool(np.all(table[1:] <= table[:-1]))


def optimal_policies(step_nll: np.ndarray, budgets: Iterable[int], sort_decreasing: bool = False) -> dict[int, Policy]:
    """Exact minimum-cost policy with exactly k chunks, for each k in budgets (1 <= k <= D).

    step_nll: shape (D,), finite non-negative per-step cost l_0..l_{D-1} (bits or nats).
    sort_decreasing: the paper's option to damp noise in an estimated table: the DP runs on
        np.sort(step_nll)[::-1] (so step t gets the t-th largest l, not its own), and each
        returned Policy.cost is the cost of its starts under that SORTED table. Use
        policy_cost(step_nll, policy.starts) for its cost under the original table.
    Returns {k: Policy} (sorted by k); Policy.cost = policy_cost(table, starts) exactly, which is
    the DP's optimum up to float rounding. Among tied optima any one may be returned.
    Raises ValueError for an invalid table or a budget outside 1..D.

    Cost: O(max(budgets) * D) time for a non-increasing table (hull), O(max(budgets) * D log D)
    otherwise (Li Chao tree); at most 4 * max(budgets) * D bytes for the argmins (less when the
    largest budgets are close to D).
    """
    table = as_step_table(step_nll)
    if sort_decreasing:
        table = np.ascontiguousarray(np.sort(table)[::-1])
    ks = as_budgets(budgets, table.size)
    if not ks:
        return {}
    hi = _layer_bounds(ks, table.size)
    _, arg, offsets = _layered_dp(table, hi, True, _is_non_increasing(table))
    policies = {}
    for k in ks:
        starts = _read_back(arg, offsets, k, table.size)
        policies[k] = Policy(starts=starts, cost=policy_cost(table, starts))
    return policies


def cost_curve(step_nll: np.ndarray, max_budget: int) -> np.ndarray:
    """Optimal cost with exactly k chunks for every k = 0..max_budget: float64 (max_budget+1,).

    Entry 0 is inf (no chunk covers D >= 1 steps). Values are the DP's (they can differ from
    policy_cost of the read-back starts by float rounding). Keeps no argmin table, so its memory
    is O(D) for any max_budget. step_nll: shape (D,), used as given (not sorted here).
    """
    table = as_step_table(step_nll)
    (max_budget,) = as_budgets([max_budget], table.size)
    hi = np.full(max_budget + 1, table.size, dtype=np.int64)
    end, _, _ = _layered_dp(table, hi, False, _is_non_increasing(table))
    return end


def reference_policies(step_nll: np.ndarray, budgets: Iterable[int]) -> dict[int, Policy]:
    """The same optima as optimal_policies by the direct layered DP (vectorised NumPy).

    Every layer k = 1..max(budgets) takes the minimum over all s of cost_{k-1}(s) + (t - s) * l[s]
    for all t at once: O(max(budgets) * D^2) time. Kept as the definition to test and benchmark
    the fast path against. Ties go to the smallest s (np.argmin). step_nll: shape (D,).
    """
    table = as_step_table(step_nll)
    ks = as_budgets(budgets, table.size)
    if not ks:
        return {}
    num_steps, num_layers = table.size, ks[-1]
    widths = num_steps - np.arange(num_layers + 1) + 1  # layer k holds t = k..D
    offsets = np.concatenate([[0, 0], np.cumsum(widths[1:])])
    arg = np.empty(offsets[-1], dtype=np.int32)
    prev = np.full(num_steps + 1, np.inf)
    prev[0] = 0.0
    block = max(1, _REFERENCE_BLOCK // num_steps)
    for k in range(1, num_layers + 1):
        cur = np.full(num_steps + 1, np.inf)
        for t0 in range(k, num_steps + 1, block):
            t = np.arange(t0, min(t0 + block, num_steps + 1))
            s = np.arange(k - 1, t[-1])
            gap = np.subtract.outer(t, s)  # (t, s), one contiguous row per t
            values = gap * table[s]
            values += prev[s]
            values[gap <= 0] = np.inf  # a chunk starts before the steps it covers
            best = np.argmin(values, axis=1)
            cur[t] = values[np.arange(t.size), best]
            arg[offsets[k] + t - k] = s[best]
        prev = cur
    policies = {}
    for k in ks:
        starts = _read_back(arg, offsets, k, num_steps)
        policies[k] = Policy(starts=starts, cost=policy_cost(table, starts))
    return policies
