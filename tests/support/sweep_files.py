"""Sweep files and MLflow lookups shared by the integration and fault tests."""

from pathlib import Path

import mlflow
import yaml

# Two tiny trials (order-agnostic and upscale b = 4 on digits), 2 Train workers each.
TINY = {
    "sweep": {"name": "tiny"},
    "data": {"spec": "digits"},
    "model": {"preset": "cpu-tiny", "branching": {"grid": [17, 4]}, "parameterization": "data"},
    "train": {"steps": 6, "batch_size": 8, "checkpoint_every": 3, "log_every": 2, "learning_rate": 0.002,
              "ema_decay": 0.9},
    "eval": {"samples_per_image": 1, "max_images": 40},
    "resources": {"workers_per_trial": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
    "failure": {"train_max_failures": 1, "trial_max_failures": 0},
    "postprocess": {"budgets": [3, 8, "full"], "table_samples_per_step": 2, "table_ranges": 2, "steps_per_call": 8,
                    "max_images": 16, "sample_grid": 4},
    # No machine sampling: a test trial lasts seconds, and the integration sweep turns it on to check it.
    "tracking": {"system_metrics_interval_s": 0},
}


def write_sweep(tmp_path: Path, name: str, config: dict, tracking: str) -> Path:
    """Write `config` as sweep `name` into tmp_path, tracked at `tracking`, stored under tmp_path/storage."""
    config = {**config, "sweep": {**config.get("sweep", {}), "name": name},
              "tracking": {**config.get("tracking", {}), "uri": tracking},
              "storage": {"path": str(tmp_path / "storage")}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sweep_runs(uri: str, experiment: str):
    """(client, sweep runs, trial runs) of an experiment."""
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ardm.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children
