"""`ardm budgets` in one process: a model's step table, budget curve and sample grids, written into
a folder and resumed from it (orchestrator/postprocess.py does the same on Ray for a sweep's trials).

Folder layout: step_table.parquet, budgets/budget-<k>.json (each budget's estimates as soon as
they are measured), budget_bpd.parquet/.csv/.png and policies.json (the curve, ardm.budgets), and
samples_budget_<k>.png (a grid per budget below the full one; for text, samples_budget_<k>.txt). A
rerun into the same folder reuses what still holds: the table, each budget's estimates and the grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ardm import tables
from ardm.budgets import BudgetCurve, budget_curve, resolve_budgets, save_budget_curve
from ardm.checkpoint import load_fitting_data
from ardm.config import ConfigError
from ardm.images import full_grid
from ardm.modality import IMAGE
from ardm.model import ARDM
from ardm.progress import note
from ardm.samples import sample_suffix, save_samples
from ardm.sampling import sample

# File names in a budgets folder; a sweep's post-processing folders use the same (orchestrator.layout).
STEP_TABLE = "step_table.parquet"


def sample_grid_file(calls: int, modality: str = IMAGE) -> str:
    """The file name of the samples drawn at a budget of `calls` total network calls: a PNG grid
    (images) or a .txt file (text, ardm.samples.sample_suffix)."""
    return f"samples_budget_{calls}{sample_suffix(modality)}"


def model_budgets(budgets: Sequence[object], model: ARDM, what: str) -> list[int]:
    """Sorted total calls of budgets (ints, "N/stage", "full"; ardm.budgets.parse_budget) for a
    model; one out of range or unparsable -> ConfigError naming `what` (a flag, a field)."""
    try:
        return resolve_budgets(budgets, model.num_stages, model.num_variables)
    except ValueError as err:
        raise ConfigError(f"{what}: {err}") from None


def run_budgets(
    model: ARDM, data: str, out: str | Path, budgets: Sequence[int], *, split: str, max_images: int,
    table_split: str, table_images: int, table_samples_per_step: int, orders_per_image: int,
    sort_decreasing: bool, sample_grid: int, seed: int, progress: bool = False,
) -> BudgetCurve:
    """Measure the budget curve of `model` for `budgets` (total calls) into the folder `out`.

    bpd is measured on `max_images` (0: all) images of `data`'s `split`, spread over it, with
    `orders_per_image` orders each; the DP's step table is estimated with `table_samples_per_step`
    draws per step on `table_images` (0: all) images of `table_split`, and sorted decreasing before
    the DP when `sort_decreasing` (ardm.budgets). Every budget below the full one gets a grid of
    `sample_grid` images (0: none; rounded up to a full grid, ardm.images.full_grid) drawn with its
    optimal policy, above a row of the measured images: the full budget's is `ardm
    sample`'s, S*D calls in a row, too slow to draw by default.
    """
    out = Path(out)
    images = load_fitting_data(model.spec, data, split).subset(max_images, seed)[0]
    train, metadata = tables.table_images(data, table_split, table_images, seed)
    if table_split == split:  # said even with progress off: it changes what the numbers mean
        note(f"note: the step table is estimated on the {table_split} split, where bpd is measured: the measured "
             "bpd of the optimal policies is optimistically biased")
    table_path = str(out / STEP_TABLE)
    table = tables.reusable_table(table_path, tables.table_metadata(model, table_samples_per_step, seed, metadata))
    if table is None:
        table = tables.estimate_step_table(model, train, table_samples_per_step, seed=seed, progress=progress,
                                           metadata=metadata)
        table.save(table_path)
    else:
        note(f"step table: estimated before, reusing {table_path}", progress)
    measured: set[int] = set()
    curve = budget_curve(model, table, images, budgets, orders_per_image, seed=seed,
                         sort_decreasing=sort_decreasing, progress=progress, cache=str(out / "budgets"),
                         on_budget=lambda budget, _: measured.add(budget))
    save_budget_curve(curve, out, title=f"{data} {model.upscaler}")
    for budget in [b for b in budgets if b < model.num_steps] if sample_grid else []:
        grid_path = out / sample_grid_file(budget, model.spec.modality)
        if budget in measured or not grid_path.is_file():  # a grid is redrawn with its budget
            count, columns = full_grid(sample_grid)
            grid = sample(model, count, policy=curve.policies[budget, "optimal"], seed=seed,
                          progress=progress, desc=f"sample grid, budget {budget} calls, policy optimal")
            save_samples(grid, model.spec, grid_path, reference=images[:columns],
                         title=f"{data} {model.upscaler}: budget {budget} calls, optimal policy")
    return curve
