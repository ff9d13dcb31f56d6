"""Budget versus bits per dimension for one model: DP policies, their predicted and measured cost.

A budget is written as total network calls (`20`), as calls per stage (`500/stage`: S x 500
calls in all, the paper's unit for upscale models, e.g. its audio "8 x 500") or as `full` (every
step, S*D calls); `resolve_budget` turns each into total calls for a given model. For an upscale
model (S stages) the total is split over the stages, because a chunk never crosses a stage
boundary:
    optimal        the paper's DP policy with the budget split evenly over stages
    optimal-joint  the DP with the split itself chosen to minimise the summed cost (S > 1 only)
    naive          evenly spaced chunks, the budget split evenly over stages
Predicted bpd is the policy's cost under the table the DP solved, sum_j (s_{j+1} - s_j) l_{s_j} / D
per stage, with the standard error propagated from the table; measured bpd runs the model with
the policy on held-out images (ardm.evaluate.measure_policy).

By default the table is first sorted in decreasing order per stage (the paper's option): it damps
the estimate's noise, makes the predicted cost non-increasing in the budget (the sorted table is
Monge), and keeps the full budget's prediction equal to the full-step ELBO. Without sorting the DP
is exact on the raw table, where noise can make one more call cost more.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from torch import nn

from ardm.evaluate import Estimate, measure_policy, paired_difference
from ardm.modality import IMAGE, unit_abbreviation, unit_name
from ardm.model import unwrap
from ardm.parallel import joint_allocation, naive_policy, optimal_policies
from ardm.progress import note
from ardm.storage import filesystem, read_json, write_atomic
from ardm.tables import StepTable, model_identity

POLICIES = ("optimal", "optimal-joint", "naive")


@dataclass
class BudgetCurve:
    """rows: one dict per (budget, policy) with the keys of `COLUMNS`; policies: the chunk starts
    per stage for each (budget, policy); full_elbo: (bpd, stderr) of the every-step model; modality:
    the model's (ardm.modality): the *_bpd values are bits per character for text."""

    rows: list[dict]
    policies: dict[tuple[int, str], list[list[int]]]
    full_elbo: tuple[float, float]
    modality: str = IMAGE


COLUMNS = ("budget", "policy", "calls", "calls_per_stage", "predicted_bpd", "predicted_stderr",
           "measured_bpd", "measured_stderr", "excess_bpd", "excess_stderr")


BudgetSpec = int | str  # total calls, "N/stage" or "full"
PER_STAGE = "/stage"


def parse_budget(value: object) -> BudgetSpec:
    """One budget as written in a sweep file or on the command line, normalised: an int >= 1
    (total calls), "N/stage" with an integer N >= 1, or "full". Anything else -> ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"budget {value!r}: expected an integer >= 1, 'N/stage' or 'full'")
    text = str(value).strip()
    if text == "full":
        return text
    per_stage = text.endswith(PER_STAGE)
    number = text.removesuffix(PER_STAGE).strip()
    if not number.lstrip("-").isdigit():
        raise ValueError(f"budget {value!r}: expected an integer >= 1, 'N/stage' (N an integer) or 'full'")
    if int(number) < 1:
        raise ValueError(f"budget {value!r}: each must be an integer >= 1 (calls{' per stage' if per_stage else ''})")
    return f"{int(number)}{PER_STAGE}" if per_stage else int(number)


def parse_budget_list(text: str) -> list[BudgetSpec]:
    """Comma-separated budgets, e.g. "8,20,500/stage,full" (see parse_budget)."""
    return [parse_budget(v) for v in text.split(",") if v.strip()]


def resolve_budget(budget: BudgetSpec, num_stages: int, num_variables: int) -> int:
    """Total network calls of a budget for a model of S = num_stages stages of D = num_variables
    steps: "full" is S*D, "N/stage" is S*N (N must be at most D). Range checks of totals are
    `check_budgets`'s."""
    budget = parse_budget(budget)
    if budget == "full":
        return num_stages * num_variables
    if isinstance(budget, str):
        per_stage = int(budget.removesuffix(PER_STAGE))
        if per_stage > num_variables:
            raise ValueError(f"budget {budget}: more than D={num_variables} calls per stage")
        return num_stages * per_stage
    return budget


def resolve_budgets(budgets: Sequence[BudgetSpec], num_stages: int, num_variables: int) -> list[int]:
    """Sorted distinct total calls of several budgets, each checked to lie in S..S*D (ValueError)."""
    resolved = sorted({resolve_budget(b, num_stages, num_variables) for b in budgets})
    check_budgets(resolved, num_stages, num_variables)
    return resolved


def split_evenly(budget: int, num_stages: int) -> list[int]:
    """Per-stage budgets summing to `budget`, as equal as possible (earlier stages get the extra)."""
    return [budget // num_stages + (1 if s < budget % num_stages else 0) for s in range(num_stages)]


def check_budgets(budgets: Sequence[int], num_stages: int, num_variables: int) -> None:
    """A budget needs at least one call per stage and at most one per step: S <= budget <= S*D."""
    for budget in budgets:
        if not num_stages <= budget <= num_stages * num_variables:
            most = num_stages * num_variables
            raise ValueError(f"budget {budget} outside {num_stages}..{most} (S={num_stages}, D={num_variables})")


def budget_policies(
    step_nll: np.ndarray, budgets: Sequence[int], sort_decreasing: bool = True
) -> dict[tuple[int, str], list[list[int]]]:
    """Chunk starts per stage for each budget and policy name. step_nll: (S, D) bits per variable."""
    num_stages, d = step_nll.shape
    check_budgets(budgets, num_stages, d)
    splits = {b: split_evenly(b, num_stages) for b in budgets}
    per_stage = [
        optimal_policies(step_nll[s], sorted({split[s] for split in splits.values()}), sort_decreasing)
        for s in range(num_stages)
    ]
    out: dict[tuple[int, str], list[list[int]]] = {}
    for budget, split in splits.items():
        out[budget, "optimal"] = [per_stage[s][k].starts.tolist() for s, k in enumerate(split)]
        if num_stages > 1:
            joint = joint_allocation(step_nll, budget, sort_decreasing)
            out[budget, "optimal-joint"] = [p.starts.tolist() for p in joint]
        out[budget, "naive"] = [naive_policy(d, k).starts.tolist() for k in split]
    return out


def predicted_bpd(
    table: StepTable, policy: Sequence[Sequence[int]], sort_decreasing: bool = True
) -> tuple[float, float]:
    """(bpd, stderr) a policy costs under the table (sorted decreasing per stage if asked, as the
    DP saw it): per chunk, its size times l at its start."""
    nll, se = table.matrix("nll_bits"), table.matrix("stderr_bits")
    if sort_decreasing:
        order = np.argsort(-nll, axis=1, kind="stable")
        nll, se = np.take_along_axis(nll, order, 1), np.take_along_axis(se, order, 1)
    d = table.num_variables
    cost, var = 0.0, 0.0
    for s, starts in enumerate(policy):
        sizes = np.diff([*starts, d])
        cost += float((sizes * nll[s, starts]).sum())
        var += float((sizes**2 * se[s, starts] ** 2).sum())
    return cost / d, float(np.sqrt(var)) / d


def measure_budget(
    model: nn.Module,
    images: np.ndarray,
    policies: dict[str, list[list[int]]],
    orders_per_image: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Estimate]:
    """Measured bpd (ardm.evaluate.measure_policy) of each named policy of one budget on uint8
    images (N, C, H, W), all with the same seed, so on the same images and orders; policies that
    coincide (every policy at the full budget, say) are measured once, under one progress bar
    naming the budget and all of them."""
    by_starts: dict[str, list[str]] = {}
    for name, policy in policies.items():
        by_starts.setdefault(json.dumps(policy), []).append(name)
    measured: dict[str, Estimate] = {}
    for names in by_starts.values():
        policy = policies[names[0]]
        per_stage = [len(p) for p in policy]
        split = "" if len(policy) == 1 else f" ({per_stage[0]}/stage)" if len(set(per_stage)) == 1 \
            else f" ({','.join(map(str, per_stage))} per stage)"
        desc = f"budget {sum(per_stage)} calls{split}, policy {' = '.join(names)}"
        est = measure_policy(model, images, policy, orders_per_image, batch_size, seed, progress, desc)
        measured |= dict.fromkeys(names, est)
    return {name: measured[name] for name in policies}


def budget_curve(
    model: nn.Module,
    table: StepTable,
    images: np.ndarray,
    budgets: Sequence[int],
    orders_per_image: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    sort_decreasing: bool = True,
    progress: bool = False,
    cache: str | Path | None = None,
    on_budget: Callable[[int, dict[str, Estimate]], None] | None = None,
) -> BudgetCurve:
    """Predicted and measured bpd of every policy for every budget (total calls) on uint8 images
    (N, C, H, W), and each one's excess over the every-step policy, which is always measured too.

    The table should come from other images than `images` (ardm.tables.table_images), or the
    measured bpd of the policies chosen on it is optimistically biased.

    cache: a folder (path or URI). Each budget's estimates are written there (budget-<k>.json,
    atomically) as soon as they are measured, keyed by the model's identity, the measured images,
    orders per image, batch size, seed and the budget's policies; a file with the same key is
    reused instead of measuring again, so an interrupted or repeated run measures only what is
    missing. on_budget(budget, estimates by policy) runs after each budget measured here (not for
    those reused).
    """
    full = table.num_stages * table.num_variables
    policies = budget_policies(table.matrix("nll_bits"), sorted({*budgets, full}), sort_decreasing)
    key = {"model": model_identity(model), "images": _digest(images), "orders_per_image": orders_per_image,
           "batch_size": batch_size, "seed": seed}
    measured = {}
    for budget in sorted({b for b, _ in policies}, reverse=True):  # the full budget first: every row needs it
        named = {name: starts for (b, name), starts in policies.items() if b == budget}
        uri = f"{cache}/budget-{budget}.json"
        done = read_json(uri) if cache is not None else None
        if done is not None and done.get("key") == key and done["policies"] == named:
            estimates = {name: Estimate.from_dict(est) for name, est in done["measured"].items()}
            note(f"budget {budget} calls: measured before, reusing {uri}", progress)
        else:
            estimates = measure_budget(model, images, named, orders_per_image, batch_size, seed, progress)
            if cache is not None:
                record = {"budget": budget, "key": key, "policies": named,
                          "measured": {name: est.to_dict() for name, est in estimates.items()}}
                write_atomic(*filesystem(uri), json.dumps(record).encode())
            if on_budget is not None:
                on_budget(budget, estimates)
        measured |= {(budget, name): est for name, est in estimates.items()}
    rows = [curve_row(table, budget, name, policy, measured[budget, name], measured[full, "optimal"],
                      sort_decreasing)
            for (budget, name), policy in policies.items()]
    return BudgetCurve(rows=rows, policies=policies, full_elbo=table.full_elbo_bpd(),
                       modality=unwrap(model).spec.modality)


def _digest(images: np.ndarray) -> str:
    """A short hash of a set of images (shape and pixels): which images a cached budget was measured on."""
    array = np.ascontiguousarray(images)
    return hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()[:16]


def curve_row(
    table: StepTable, budget: int, name: str, policy: Sequence[Sequence[int]], measured: Estimate,
    full: Estimate, sort_decreasing: bool = True,
) -> dict:
    """One row of a budget curve (keys: COLUMNS): the policy's predicted cost, its measured bpd and
    that bpd's excess over the every-step policy's (`full`, measured on the same images) with its
    paired standard error."""
    pred, pred_se = predicted_bpd(table, policy, sort_decreasing)
    excess = paired_difference(measured, full)
    return {
        "budget": budget, "policy": name, "calls": sum(len(p) for p in policy),
        "calls_per_stage": ",".join(str(len(p)) for p in policy), "predicted_bpd": pred,
        "predicted_stderr": pred_se, "measured_bpd": measured.mean, "measured_stderr": measured.stderr,
        "excess_bpd": excess.mean, "excess_stderr": excess.stderr,
    }


def format_curve(curve: BudgetCurve) -> str:
    """The curve as a text table (one line per budget and policy), as the commands print it."""
    lines = [f"{'calls':>7} {'per stage':>12} {'policy':>14} {'predicted':>17} {'measured':>17} {'excess':>17}"]
    for r in sorted(curve.rows, key=lambda r: (r["calls"], POLICIES.index(r["policy"]))):
        lines.append(f"{r['calls']:>7} {r['calls_per_stage']:>12} {r['policy']:>14} {r['predicted_bpd']:>8.4f} ± "
                     f"{r['predicted_stderr']:.4f} {r['measured_bpd']:>8.4f} ± {r['measured_stderr']:.4f} "
                     f"{r['excess_bpd']:>+8.4f} ± {r['excess_stderr']:.4f}")
    elbo, elbo_se = curve.full_elbo
    lines.append(f"{unit_name(curve.modality)}; excess: over all steps on the same images (paired s.e.); "
                 f"the table's full-step ELBO {elbo:.4f} ± {elbo_se:.4f}")
    return "\n".join(lines)


def format_summary(curve: BudgetCurve, table_split: str, folder: str | Path) -> str:
    """What `ardm budgets` and `ardm postprocess` print at the end: the curve and where its files are."""
    return f"{format_curve(curve)}\nstep table on {table_split} images; wrote {folder}"


def save_budget_curve(curve: BudgetCurve, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write budget_bpd.parquet, budget_bpd.csv, budget_bpd.png and policies.json into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"budget_bpd.{name}" for name in ("parquet", "csv", "png")}
    pq.write_table(pa.Table.from_pylist(curve.rows), paths["parquet"])
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(curve.rows)
    plot_budget_curve(curve, paths["png"], title)
    paths["policies"] = out / "policies.json"
    policies = [{"budget": b, "policy": name, "starts": starts} for (b, name), starts in curve.policies.items()]
    paths["policies"].write_text(json.dumps({"full_elbo_bpd": curve.full_elbo[0], "policies": policies}))
    return paths


def format_calls_axis(ax) -> None:
    """A log x axis of network calls with plain tick labels (5, 10, 20, 50, ...), not 4x10^0."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("network calls (total)")


def plot_budget_curve(curve: BudgetCurve, path: str | Path, title: str = "") -> Path:
    """bpd against network calls (log x): measured with error bars, predicted dashed, full ELBO line."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on workers or CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, name in enumerate(p for p in POLICIES if any(r["policy"] == p for r in curve.rows)):
        rows = sorted((r for r in curve.rows if r["policy"] == name), key=lambda r: r["calls"])
        calls = [r["calls"] for r in rows]
        color = f"C{i}"
        ax.errorbar(calls, [r["measured_bpd"] for r in rows], yerr=[2 * r["measured_stderr"] for r in rows],
                    marker="o", color=color, capsize=3, label=f"{name} (measured, ±2 s.e.)")
        ax.plot(calls, [r["predicted_bpd"] for r in rows], ls="--", color=color, alpha=0.7,
                label=f"{name} (predicted)")
    elbo, elbo_se = curve.full_elbo
    ax.axhline(elbo, color="k", lw=1, ls=":", label=f"the table's full-step ELBO {elbo:.3f} ± {elbo_se:.3f}")
    format_calls_axis(ax)
    ax.margins(y=0.1)  # the ELBO is the lowest line: keep it off the frame
    ax.set_ylabel(unit_name(curve.modality))
    ax.set_title(title or f"budget vs {unit_abbreviation(curve.modality)}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
