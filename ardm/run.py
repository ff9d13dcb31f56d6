"""One standalone training run from a RunConfig: data, model, train, evaluate, sample, report.

Output folder layout: checkpoint.pt (model, EMA, optimizer, step), config.yaml (the resolved
config), metrics.json (train and test negative ELBO in bits per dimension, or per character for text;
keys *_bpd either way, "unit" says which), samples.png or, for text, samples.txt (EMA samples),
train_log.jsonl.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml

from ardm.checkpoint import CHECKPOINT_FILE, CheckpointError, check_same_model, load_checkpoint
from ardm.config import ModelConfig, RunConfig
from ardm.data import ImageDataset, load_dataset
from ardm.device import choose_device
from ardm.evaluate import estimate_nelbo
from ardm.images import full_grid
from ardm.modality import examples_name, unit_abbreviation
from ardm.model import ModelSpec, build_ardm
from ardm.samples import sample_suffix, save_samples
from ardm.sampling import sample
from ardm.storage import filesystem, space_for, write_atomic
from ardm.train import train


def model_spec(model: ModelConfig, data: ImageDataset) -> ModelSpec:
    """The ModelSpec for a model config on a dataset: its shape, K and modality."""
    return ModelSpec(
        shape=data.shape, num_classes=data.num_classes, branching=model.branching,
        parameterization=model.parameterization, network=model.network_config().to_dict(), modality=data.modality,
    )


def run_training(config: RunConfig, resume: bool = True, device: str | None = None, progress: bool = True) -> dict:
    """Train, evaluate on the test split and write samples; returns the metrics written to metrics.json.

    resume: continue from output/checkpoint.pt when it exists (a finished run is not retrained).
    """
    device = choose_device(device)
    out = Path(config.output)
    train_set, test_set = load_dataset(config.data, "train"), load_dataset(config.data, "test")
    spec = model_spec(config.model, train_set)
    checkpoint = out / CHECKPOINT_FILE
    resume_from = checkpoint if resume and checkpoint.exists() else None
    if resume_from is not None:  # refuse another model's run before writing anything into its folder
        try:
            check_same_model(load_checkpoint(resume_from), spec, resume_from)
        except CheckpointError as err:
            # Resuming is the default, so the way out is to say "not this checkpoint" (--fresh is resume=False).
            hint = "start afresh with --fresh (overwrites it) or use another output folder"
            raise CheckpointError(f"{err}; {hint}") from err
    # Atomic writes (creating the folder): out of space, one line names the file (ardm.storage).
    write_atomic(*filesystem(str(out / "config.yaml")), yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    torch.manual_seed(config.train.seed)  # initial weights
    model = build_ardm(spec)
    log_path = out / "train_log.jsonl"
    log = log_path.open("a")

    def on_log(metrics: dict) -> None:
        with space_for(log_path):
            log.write(json.dumps(metrics) + "\n")
            log.flush()

    started = time.perf_counter()
    try:
        result = train(
            model, train_set.images, config.train, device=device, checkpoint_path=checkpoint,
            resume_from=resume_from, on_log=on_log, extra={"data": config.data}, progress=progress,
        )
    finally:
        with space_for(log_path):  # what a failed write left in the buffer is written again here
            log.close()
    train_seconds = time.perf_counter() - started
    test_images, _ = test_set.subset(config.eval.max_images, seed=config.train.seed)
    test = estimate_nelbo(
        result.ema, test_images, config.eval.samples_per_image, config.eval.batch_size, seed=config.train.seed,
        progress=progress, desc=f"negative ELBO of {len(test_images)} test images",
    )
    metrics = {
        "model": str(model.upscaler), "parameterization": spec.parameterization, "steps": result.step,
        "train_bpd": result.metrics.get("train_bpd"),
        "test_bpd": test.mean, "test_bpd_stderr": test.stderr, "test_images": test.n,
        "generation_steps": result.ema.num_steps, "train_seconds": train_seconds, "checkpoint": str(checkpoint),
        "unit": unit_abbreviation(spec.modality), "examples": examples_name(spec.modality),
    }
    if config.eval.sample_grid:
        count, columns = full_grid(config.eval.sample_grid)
        images = sample(result.ema, count, seed=config.train.seed, progress=progress,
                        desc=f"sample grid of {count} images")
        title = f"{config.data} {result.ema.upscaler}: samples, all {result.ema.num_steps} steps"
        path = out / f"samples{sample_suffix(spec.modality)}"
        with space_for(path):
            metrics["samples"] = str(save_samples(images, spec, path, title=title,
                                                  reference=test_set.subset(columns, seed=config.train.seed)[0]))
    write_atomic(*filesystem(str(out / "metrics.json")), json.dumps(metrics, indent=2).encode())
    return metrics
