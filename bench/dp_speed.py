"""Speed of the exact parallel-generation DP: the fast path against the direct DP, side by side.

For each D and two tables shaped like an ARDM per-step table (l_t falling from ~8 to ~1 bits plus
estimation noise: the noisy table as estimated, and the same values sorted in decreasing order),
times optimal_policies (hull / Li Chao tree) and reference_policies (the O(K D^2) NumPy DP) on the
same table and budgets, checks that their costs agree, and reports the speed ratio. The direct
DP takes minutes at large D, so --ref-max-budget caps the budgets it runs (the table says which
budgets were compared; the fast path is also timed on all budgets). Then times joint_allocation
for an upscale-shaped (S, D) table against the paper's equal split (stage_policies).

    python bench/dp_speed.py [--sizes 3072 12288 16000] [--ref-max-budget 3072:1000,12288:500,16000:200]
                             [--out bench/results/dp_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from ardm.parallel import joint_allocation, optimal_policies, reference_policies, stage_policies

BUDGETS = [10, 20, 50, 100, 200, 500, 1000]
JOINT_STAGES, JOINT_STEPS = 4, 3072
JOINT_TOTALS = [40, 400, 2000, 4000]


def ardm_like_table(num_steps: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Per-step bits, shape (D,): ~8 bits for the first variable, ~1 bit once most are observed,
    plus noise like a moving-average estimate (so the table is not monotone)."""
    x = np.linspace(0.0, 1.0, num_steps)
    return scale * np.clip(1 + 7 * (1 - x) ** 4 + rng.normal(0, 0.3, num_steps), 0, None)


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """Best wall time in seconds over repeats, and the last result."""
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def parse_caps(text: str) -> dict[int, int]:
    """'3072:1000,16000:100' -> {3072: 1000, 16000: 100}; sizes not named run every budget."""
    return {int(d): int(k) for d, k in (item.split(":") for item in text.split(",") if item)}


def bench_dp(sizes: list[int], caps: dict[int, int]) -> list[dict[str, Any]]:
    rows = []
    for num_steps in sizes:
        noisy = ardm_like_table(num_steps, np.random.default_rng(num_steps))
        for name, table in (("noisy", noisy), ("sorted", np.ascontiguousarray(np.sort(noisy)[::-1]))):
            compared = [k for k in BUDGETS if k <= caps.get(num_steps, max(BUDGETS))]
            fast_all_s, _ = timed(lambda t=table: optimal_policies(t, BUDGETS), repeats=3)
            fast_s, fast = timed(lambda t=table, ks=compared: optimal_policies(t, ks), repeats=3)
            ref_s, ref = timed(lambda t=table, ks=compared: reference_policies(t, ks))
            rel_diff = max(abs(fast[k].cost - ref[k].cost) / ref[k].cost for k in compared)
            rows.append(
                {
                    "D": num_steps,
                    "table": name,
                    "max_budget_compared": max(compared),
                    "fast_all_budgets_s": fast_all_s,
                    "fast_s": fast_s,
                    "reference_s": ref_s,
                    "speedup": ref_s / fast_s,
                    "max_rel_cost_diff": rel_diff,
                    "costs_agree": rel_diff <= 1e-9,
                    "costs_bits": {k: fast[k].cost for k in compared},
                }
            )
            row = rows[-1]
            print(
                f"{num_steps:>6} {name:>7} {row['max_budget_compared']:>8} {fast_all_s:>12.3f} {fast_s:>10.3f}"
                f" {ref_s:>10.2f} {row['speedup']:>9.0f}x {rel_diff:>10.1e}",
                flush=True,
            )
    return rows


def bench_joint() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    # Later stages refine coarser digits already known, so they cost fewer bits per step.
    table = np.stack([ardm_like_table(JOINT_STEPS, rng, scale=1 / (s + 1)) for s in range(JOINT_STAGES)])
    rows = []
    # Unsorted rows take the Li Chao path; sorted rows (the paper's choice) the hull.
    for sort_decreasing in (False, True):
        for total in JOINT_TOTALS:
            joint_s, joint = timed(lambda n=total, o=sort_decreasing: joint_allocation(table, n, o))
            equal_s, equal = timed(lambda n=total, o=sort_decreasing: stage_policies(table, n // JOINT_STAGES, o))
            rows.append(
                {
                    "S": JOINT_STAGES,
                    "D": JOINT_STEPS,
                    "sort_decreasing": sort_decreasing,
                    "total_budget": total,
                    "joint_s": joint_s,
                    "joint_budgets": [p.budget for p in joint],
                    "joint_cost_bits": sum(p.cost for p in joint),
                    "equal_split_s": equal_s,
                    "equal_split_cost_bits": sum(p.cost for p in equal),
                }
            )
            row = rows[-1]
            print(
                f"{'sorted' if sort_decreasing else 'noisy':>7} {total:>6} {joint_s:>8.2f} {equal_s:>8.2f}"
                f" {row['joint_cost_bits']:>11.1f} {row['equal_split_cost_bits']:>11.1f}  {row['joint_budgets']}",
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3072, 12288, 16000])
    parser.add_argument(
        "--ref-max-budget",
        default="3072:1000,12288:500,16000:200",
        help="D:K,... largest budget the direct DP runs at each D (it takes ~K * D^2 operations)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/dp_speed.json"))
    args = parser.parse_args()

    # Compile (or load from numba's cache) both kernels before timing anything.
    warm = np.linspace(3, 1, 64)
    compile_s, _ = timed(lambda: (optimal_policies(warm, [5]), optimal_policies(warm[::-1], [5])))
    print(f"numba compile / cache load: {compile_s:.2f} s; budgets {BUDGETS}")
    header = ("D", "table", "max K", "fast all K", "fast", "reference", "ratio", "rel diff")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 7, 8, 12, 10, 10, 10, 10), strict=True)))
    dp_rows = bench_dp(args.sizes, parse_caps(args.ref_max_budget))
    print(f"\njoint_allocation, S={JOINT_STAGES}, D={JOINT_STEPS} vs equal split (stage_policies), seconds and bits")
    print(f"{'table':>7} {'total':>6} {'joint':>8} {'equal':>8} {'joint bits':>11} {'equal bits':>11}  budgets")
    joint_rows = bench_joint()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "numba": numba.__version__},
        "budgets": BUDGETS,
        "compile_s": compile_s,
        "dp": dp_rows,
        "joint_allocation": joint_rows,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    if not all(row["costs_agree"] for row in dp_rows):
        raise SystemExit("fast path and reference disagree")


if __name__ == "__main__":
    main()
