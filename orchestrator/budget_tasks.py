"""The Ray tasks of post-processing that measure and compress one budget's policies (run by
orchestrator.postprocess, which gathers their results).

Apart from orchestrator.postprocess, which also talks to MLflow: a task's worker process imports
this module, and MLflow is seconds of CPU per fresh worker that these tasks never use.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import ray

from ardm.budgets import measure_budget
from ardm.checkpoint import load_model
from ardm.compression import choose_order, compressed_bpd
from ardm.compression.baselines import baseline_bpd
from ardm.data import load_dataset
from ardm.device import choose_device
from ardm.images import full_grid
from ardm.samples import save_samples
from ardm.sampling import sample
from ardm.storage import filesystem, write_atomic
from orchestrator import layout, names


def _test_images(data: str, count: int, seed: int):
    """The test images whose bpd (and compressed size) is measured: `count` (0: all) spread over the split."""
    return load_dataset(data, "test").subset(count, seed)[0]


@ray.remote(max_retries=3)
def measure_budget_task(checkpoint: str, data: str, budget: int, policies: dict[str, list[list[int]]],
                    settings: dict, seed: int, out: str) -> dict:
    """Measure each policy of one budget on the test images (ardm.budgets.measure_budget) and draw
    a sample grid; write both."""
    model = load_model(checkpoint, ema=True, map_location=choose_device())
    images = _test_images(data, settings["max_images"], seed)
    measured = measure_budget(model, images, policies, settings["orders_per_image"], seed=seed)
    if settings["sample_grid"]:
        count, columns = full_grid(settings["sample_grid"])
        grid = sample(model, count, policy=policies["optimal"], seed=seed)
        modality = model.spec.modality
        with tempfile.TemporaryDirectory() as scratch:
            file = save_samples(grid, model.spec, Path(scratch) / names.sample_grid_file(budget, modality),
                                reference=images[:columns],
                                title=f"{model.upscaler}: budget {budget} calls, optimal policy")
            fs, path = filesystem(layout.sample_grid(out, budget, modality))
            write_atomic(fs, path, file.read_bytes())
    result = {"budget": budget, "policies": policies,
              "measured": {name: est.to_dict() for name, est in measured.items()}}
    fs, path = filesystem(layout.budget_result(out, budget))
    write_atomic(fs, path, json.dumps(result).encode())
    return result


@ray.remote(max_retries=3)
def compress_budget_task(checkpoint: str, data: str, budget: int, policy: list[list[int]], settings: dict,
                     seed: int, out: str) -> dict:
    """Compress test images under one budget's optimal policy, the order chosen on training images,
    and the same images with PNG and WebP-lossless; write and return {"budget", "policy",
    "settings", "order_seed", "bpd", "bits", "baselines"}."""
    model = load_model(checkpoint, ema=True)  # on the CPU: the coder needs reproducible floats
    order_images = load_dataset(data, "train").subset(settings["order_images"], seed)[0]
    order = choose_order(model, order_images, policy, settings["orders"])
    images = _test_images(data, settings["max_images"], seed)
    bpd, bits = compressed_bpd(model, images, policy, order.seed)
    result = {"budget": budget, "policy": policy, "settings": settings, "order_seed": order.seed, "bpd": bpd,
              "bits": bits.tolist(), "baselines": baseline_bpd(images)}
    fs, path = filesystem(layout.compression_result(out, budget))
    write_atomic(fs, path, json.dumps(result).encode())
    return result
