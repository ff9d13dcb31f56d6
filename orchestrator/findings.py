"""Findings a reader of a sweep report wants, computed from its rows (orchestrator/report.py), and
the paper's CIFAR-10 numbers to set beside a CIFAR-10 sweep's.

Each row is one trial: `bpd_budget_<k>` (the optimal policy's measured bpd at k total calls),
`bpd_budget_<k>_naive`, `bpd_all_steps` (every step, measured on the same images) and
`total_steps`. All values are bits per dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# The paper's CIFAR-10 results (shared/ARDM.md section 5): (model, calls per stage x stages, kind, bpd).
PAPER_CIFAR10 = (
    ("OA-ARDM", "3072", "test bpd (every step)", 2.69),
    ("Upscale ARDM b=4", "4 x 3072", "test bpd (every step)", 2.64),
    ("OA-ARDM", "500", "compression, per image", 2.73),
    ("OA-ARDM", "100", "compression, per image", 2.75),
    ("Upscale ARDM b=4", "4 x 500", "compression, per image", 2.71),
    ("Upscale ARDM b=4", "4 x 100", "compression, per image", 2.76),
)
# The paper's text8 results (shared/ARDM.md section 5), bits per character, with D3PM-absorbing's.
PAPER_TEXT8 = (
    ("OA-ARDM", "250", "test bpc (every step)", 1.43),
    ("OA-ARDM (parallel, DP)", "20", "test bpc", 1.51),
    ("D3PM-absorbing", "1000", "test bpc", 1.45),
    ("D3PM-absorbing", "20", "test bpc", 1.56),
)


@dataclass(frozen=True)
class Saving:
    """At `calls` the optimal policy measures `bpd`; the naive policy needs about `naive_calls`
    (log-linear between its measured budgets; None: more than any measured budget) for the same bpd."""

    calls: int
    bpd: float
    naive_calls: float | None

    @property
    def ratio(self) -> float | None:
        return None if self.naive_calls is None else self.naive_calls / self.calls


def _optimal_points(row: dict, budgets: list[int]) -> list[tuple[int, float]]:
    points = [(b, row[f"bpd_budget_{b}"]) for b in budgets if row.get(f"bpd_budget_{b}") is not None]
    if row.get("bpd_all_steps") is not None:
        points.append((row["total_steps"], row["bpd_all_steps"]))
    return sorted(points)


def best_per_budget(rows: list[dict], budgets: list[int]) -> dict[int, tuple[str, float]]:
    """For each budget (total calls), the configuration with the lowest measured bpd and that bpd."""
    best = {}
    for b in budgets:
        found = [(r[f"bpd_budget_{b}"], r["configuration"]) for r in rows if r.get(f"bpd_budget_{b}") is not None]
        if found:
            bpd, name = min(found)
            best[b] = (name, bpd)
    return best


def smallest_budget_within(row: dict, budgets: list[int], fraction: float) -> int | None:
    """The fewest calls at which the row's measured bpd is within `fraction` (0.01: 1%) of its
    every-step bpd; None without an every-step value."""
    full = row.get("bpd_all_steps")
    if full is None:
        return None
    return next((calls for calls, bpd in _optimal_points(row, budgets) if bpd <= full * (1 + fraction)), None)


def naive_calls_for(row: dict, budgets: list[int], target: float) -> float | None:
    """Calls the naive policy needs to reach `target` bpd: log-linear interpolation between its
    measured budgets (the every-step value included, where every policy is the same); None when no
    measured budget reaches it."""
    points = sorted((b, row[f"bpd_budget_{b}_naive"]) for b in budgets
                    if row.get(f"bpd_budget_{b}_naive") is not None)
    if not points:
        return None
    if row.get("bpd_all_steps") is not None:
        points.append((row["total_steps"], row["bpd_all_steps"]))
    for (c0, y0), (c1, y1) in zip(points, points[1:], strict=False):
        if y1 <= target < y0:
            share = (y0 - target) / (y0 - y1)
            return math.exp(math.log(c0) + share * (math.log(c1) - math.log(c0)))
    if points and points[0][1] <= target:
        return float(points[0][0])
    return None


def savings(row: dict, budgets: list[int]) -> list[Saving]:
    """For each budget where the optimal policy was measured, the naive calls for the same bpd."""
    return [Saving(b, row[f"bpd_budget_{b}"], naive_calls_for(row, budgets, row[f"bpd_budget_{b}"]))
            for b in budgets if row.get(f"bpd_budget_{b}") is not None]


def findings(rows: list[dict], budgets: list[int], unit: str = "bpd") -> list[str]:
    """Short sentences: the best configuration per budget, the smallest budget within 1% and 5% of
    each configuration's every-step value, and the optimal policy's saving in calls over the naive
    one; values in `unit` (bpd, or bpc for text)."""
    out = []
    finished = [r for r in rows if r["status"] == "finished"]
    best = best_per_budget(finished, budgets)
    if best:
        out.append("Best configuration per budget: " + "; ".join(
            f"{b} calls: {name} ({bpd:.3f})" for b, (name, bpd) in sorted(best.items())) + ".")
    for r in finished:
        within = {p: smallest_budget_within(r, budgets, p / 100) for p in (1, 5)}
        if r.get("bpd_all_steps") is not None:
            shown = ", ".join(f"{p}%: {'—' if c is None else f'{c} calls'}" for p, c in within.items())
            out.append(f"{r['configuration']}: smallest budget within 1% / 5% of its every-step "
                       f"{r['bpd_all_steps']:.3f} {unit} ({r['total_steps']} calls): {shown}.")
        saved = [s for s in savings(r, budgets) if s.ratio is not None and s.calls < r["total_steps"]]
        if saved:
            out.append(f"{r['configuration']}: the naive policy needs " + "; ".join(
                f"≈{s.naive_calls:.0f} calls for the optimal policy's {s.bpd:.3f} at {s.calls} ({s.ratio:.1f}x)"
                for s in saved) + ".")
    return out
