"""One Tune trial: a Ray Train run of the training loop over data-parallel workers (the Ray 2.60
idiom: the Tune trial function starts a TorchTrainer that reports through TuneReportCallback).

The trial's MLflow run is nested under the sweep's run; it gets the resolved config as params,
the workers' metrics, the test bpd with its standard error, the wall time and the final
checkpoint as an artifact. The Train run's name is stable for a trial, so a retried trial or a
resumed sweep continues from the trial's latest checkpoint.
"""

from __future__ import annotations

import time

import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ardm.config import build
from orchestrator.config import SweepConfig
from orchestrator.tracking import SweepTracker
from orchestrator.worker import CHECKPOINT_FILE, train_worker


def train_storage(cfg: SweepConfig) -> str:
    """Where the sweep's Ray Train runs keep their checkpoints."""
    return f"{cfg.storage.path}/{cfg.sweep.name}/train"


def run_trial(config: dict, tracker: SweepTracker, parent_id: str, data_uri: str) -> None:
    """Tune trial function. config: the trial's resolved sweep config (plain dict)."""
    cfg: SweepConfig = build(SweepConfig, config)
    trial_name = tune.get_context().get_trial_name()
    run_id = tracker.trial_run(parent_id, trial_name, config)
    resources = cfg.resources
    per_worker = {"CPU": resources.cpus_per_worker} | ({"GPU": resources.gpus_per_worker} if resources.use_gpu else {})
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config, "data_uri": data_uri, "tracker": tracker, "run_id": run_id},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers_per_trial, use_gpu=resources.use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=trial_name, storage_path=train_storage(cfg),
            failure_config=ray.train.FailureConfig(max_failures=cfg.failure.train_max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    started = time.time()
    try:
        result = trainer.fit()
    except Exception as err:
        tracker.end_run(run_id, "FAILED", reason=f"{type(err).__name__}: {err}".splitlines()[0])
        raise
    wall = time.time() - started
    final = {k: v for k, v in result.metrics.items() if k.startswith("test_")}
    tracker.log_metrics(run_id, {**final, "wall_time_s": wall}, step=result.metrics.get("step"))
    with result.checkpoint.as_directory() as folder:
        tracker.log_artifact(run_id, f"{folder}/{CHECKPOINT_FILE}", "checkpoint")
    tracker.set_tags(run_id, {"ardm.checkpoint": result.checkpoint.path})
    tracker.end_run(run_id, "FINISHED")
    tune.report({**final, "wall_time_s": wall, "checkpoint_path": result.checkpoint.path})
