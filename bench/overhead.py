"""Overhead of Ray Train: the same training steps through the plain loop and through a one-worker
Ray Train run of the sweep's own worker function (Parquet shard, reports, checkpoints, MLflow
logging), side by side in one run.

Throughput is the loop's own images/second per log window; the first window (start-up, warm-up)
is left out of both. Prints the ratio plain / Ray (goal: at most 1.10) and writes JSON.

    python bench/overhead.py [--steps 300] [--out bench/results/overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ardm.config import build
from ardm.data import convert_dataset, load_parquet_split
from ardm.model import build_ardm
from ardm.run import model_spec
from ardm.train import train
from orchestrator.config import SweepConfig
from orchestrator.tracking import SweepTracker


def sweep_config(steps: int, cpus: int) -> dict:
    return {
        "sweep": {"name": "overhead"}, "data": {"spec": "photos:8"},
        "model": {"preset": "cpu-small", "branching": 4, "parameterization": "data"},
        "train": {"steps": steps, "batch_size": 64, "learning_rate": 1e-3, "checkpoint_every": 100, "log_every": 25},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": cpus},
    }


def plain(config: dict, data_uri: str) -> list[float]:
    cfg = build(SweepConfig, config)
    shard = load_parquet_split(data_uri, "train")
    torch.manual_seed(cfg.train.seed)
    model = build_ardm(model_spec(cfg.model, shard))
    rates: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        train(model, shard.images, cfg.train, checkpoint_path=Path(scratch) / "checkpoint.pt",
              on_log=lambda m: rates.append(m["images_per_sec"]), progress=False)
    return rates


def through_ray(config: dict, data_uri: str, scratch: str, cpus: int) -> tuple[list[float], float]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from orchestrator.worker import train_worker

    ray.init(num_cpus=cpus + 1, include_dashboard=False)
    tracker = SweepTracker(f"sqlite:///{scratch}/mlflow.db", "overhead")
    parent = tracker.start_sweep("overhead", config)
    run_id = tracker.trial_run(parent, "ray", config)
    started = time.perf_counter()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config, "data_uri": data_uri, "tracker": tracker, "run_id": run_id,
                           "checkpoint_folder": f"{scratch}/storage/overhead"},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
        run_config=ray.train.RunConfig(name="overhead", storage_path=f"{scratch}/storage"),
    )
    trainer.fit()
    wall = time.perf_counter() - started
    ray.shutdown()
    history = tracker.client.get_metric_history(run_id, "images_per_sec")
    return [m.value for m in sorted(history, key=lambda m: m.step)], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="bench/results/overhead.json")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    config = sweep_config(args.steps, cpus)
    with tempfile.TemporaryDirectory() as scratch:
        data_uri = f"{scratch}/data"
        convert_dataset("photos:8", data_uri, 10000)
        started = time.perf_counter()
        plain_rates = plain(config, data_uri)
        plain_wall = time.perf_counter() - started
        ray_rates, ray_wall = through_ray(config, data_uri, scratch, cpus)
    plain_steady = statistics.median(plain_rates[1:])
    ray_steady = statistics.median(ray_rates[1:])
    ratio = plain_steady / ray_steady
    print(f"{'path':12} {'steps':>6} {'windows':>8} {'img/s (median, after start-up)':>31} {'wall s':>8}")
    print(f"{'plain loop':12} {args.steps:>6} {len(plain_rates):>8} {plain_steady:>31.1f} {plain_wall:>8.1f}")
    print(f"{'Ray Train':12} {args.steps:>6} {len(ray_rates):>8} {ray_steady:>31.1f} {ray_wall:>8.1f}")
    print(f"overhead ratio (plain / Ray, steady state): {ratio:.3f}  (goal <= 1.10)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "steps": args.steps, "cpus": cpus, "torch": torch.__version__,
        "plain_images_per_sec": plain_rates, "ray_images_per_sec": ray_rates,
        "plain_steady": plain_steady, "ray_steady": ray_steady, "ratio": ratio,
        "plain_wall_s": plain_wall, "ray_wall_s_including_startup": ray_wall,
        "spread_plain": float(np.std(plain_rates[1:])), "spread_ray": float(np.std(ray_rates[1:])),
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
