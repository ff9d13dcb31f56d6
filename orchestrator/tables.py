"""Per-step likelihood tables computed on Ray: step ranges as retried tasks, merged into one table.

Each range is a Ray task (one GPU where the cluster has GPUs, else CPUs) that loads the
checkpoint's EMA weights and the table's images of a dataset spec (ardm.tables.table_images: the
training split by default), estimates its steps (ardm.tables), and writes its part
(`<out>/parts/steps-<lo>-<hi>.parquet`, orchestrator.layout.table_part) atomically. A lost task is
retried by Ray; a range whose part already exists is not recomputed, so a resumed post-processing
run continues where it stopped. Ranges are aligned to multiples of steps_per_call, so the merged
table is bit-identical to a one-pass computation with the same seed.
"""

from __future__ import annotations

from itertools import pairwise

import ray

from ardm.checkpoint import load_model
from ardm.device import choose_device
from ardm.storage import is_file
from ardm.tables import TABLE_SPLIT, StepTable, estimate_step_table, table_images
from orchestrator.layout import step_table, table_part

# Spread over the cluster's nodes, and never inside the calling Tune trial's placement group
# (an explicit strategy is not captured by it): a trial reserves only its driver's token CPU.
OUTSIDE_TRIAL = "SPREAD"


def step_ranges(num_steps: int, num_ranges: int, steps_per_call: int) -> list[range]:
    """Split 0..num_steps-1 into at most num_ranges contiguous ranges aligned to steps_per_call."""
    blocks = -(-num_steps // steps_per_call)
    per_range = -(-blocks // max(1, num_ranges))
    edges = list(range(0, blocks, per_range)) + [blocks]
    return [range(a * steps_per_call, min(b * steps_per_call, num_steps)) for a, b in pairwise(edges)]


@ray.remote(max_retries=3)
def _table_range(checkpoint: str, data: str, split: str, steps: range, samples_per_step: int,
                 steps_per_call: int, seed: int, num_images: int, out_uri: str) -> str:
    model = load_model(checkpoint, ema=True, map_location=choose_device())
    images, metadata = table_images(data, split, num_images, seed)
    part = estimate_step_table(model, images, samples_per_step, steps=steps, steps_per_call=steps_per_call,
                               seed=seed, metadata=metadata)
    return part.save(out_uri)


def distributed_step_table(
    checkpoint: str,
    data: str,
    out: str,
    num_steps: int,
    num_ranges: int,
    samples_per_step: int = 16,
    steps_per_call: int = 16,
    seed: int = 0,
    split: str = TABLE_SPLIT,
    num_images: int = 0,
    use_gpu: bool = False,
) -> StepTable:
    """Estimate every step of a checkpoint's model in `num_ranges` Ray tasks and merge the parts.

    checkpoint: a local path every node can read (shared storage); data: a dataset spec every node
    can read (e.g. parquet:<uri>); split, num_images: the table's images (ardm.tables.table_images);
    out: folder (path or URI) for the parts and `step_table.parquet`. num_steps: the model's S*D.
    Returns the merged table.
    """
    task = _table_range.options(num_gpus=1 if use_gpu else 0, num_cpus=1, scheduling_strategy=OUTSIDE_TRIAL)
    pending = [
        task.remote(checkpoint, data, split, steps, samples_per_step, steps_per_call, seed, num_images,
                    table_part(out, steps))
        for steps in step_ranges(num_steps, num_ranges, steps_per_call)
        if not is_file(table_part(out, steps))
    ]
    ray.get(pending)
    table = StepTable.merge(StepTable.load(table_part(out, steps))
                            for steps in step_ranges(num_steps, num_ranges, steps_per_call))
    table.save(step_table(out))
    return table
