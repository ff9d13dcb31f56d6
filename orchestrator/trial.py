"""One Tune trial: a Ray Train run of the training loop over data-parallel workers (the Ray 2.60
idiom: the Tune trial function starts a TorchTrainer that reports through TuneReportCallback).

The trial's MLflow run is nested under the sweep's run; it gets the resolved config as params,
the workers' metrics, the test bpd with its standard error, the wall time and the final
checkpoint as an artifact, then the post-processing's budget metrics and artifacts
(orchestrator/postprocess.py). The Train run's name is stable for a trial, so a retried trial or a
resumed sweep continues from the trial's latest checkpoint.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import NamedTuple

import pyarrow.fs as pafs
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.constants import WORKER_GROUP_START_TIMEOUT_S_ENV_VAR
from ray.tune.integration.ray_train import TuneReportCallback

from ardm.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint
from ardm.config import build
from ardm.data.parquet import read_manifest, split_record
from ardm.modality import IMAGE, unit_name
from ardm.storage import filesystem
from ardm.train import NonFiniteLossError
from orchestrator import layout, names
from orchestrator.config import SweepConfig, trial_label
from orchestrator.messages import describe
from orchestrator.models import log_trial_model
from orchestrator.postprocess import postprocess_checkpoint
from orchestrator.restarts import NodeLostError, RestartLog, failure_reason_after_restart
from orchestrator.tracking import SweepTracker
from orchestrator.worker import ETA, PROGRESS_COLUMNS, train_worker

# In a finished trial's last Tune result: its final checkpoint file, reported once post-processing is
# done. Not Ray's "checkpoint_path", which Tune's result holds from training's last checkpoint on: a
# trial interrupted in post-processing would then pass for finished.
FINISHED_CHECKPOINT = "ardm_final_checkpoint"


def run_trial(config: dict, tracker: SweepTracker, parent_id: str, data_uri: str,
              searched: list[tuple[str, ...]]) -> None:
    """Tune trial function. config: the trial's resolved sweep config (plain dict); searched: the
    paths of the sweep's searched fields (they name the trial's configuration)."""
    cfg: SweepConfig = build(SweepConfig, config)
    trial_name = tune.get_context().get_trial_name()
    run_id = tracker.trial_run(parent_id, trial_name, config)
    # The metrics keep image names (test_bpd, bpd_*); the unit tag says what they measure.
    unit = unit_name(read_manifest(data_uri).get("modality", IMAGE))
    tracker.set_tags(run_id, {names.CONFIGURATION_TAG: trial_label(config, searched), names.UNIT_TAG: unit})
    # Tune retries a failed trial (failure.trial_max_failures): number each attempt in its run.
    attempt = len(tracker.client.get_metric_history(run_id, names.TRIAL_ATTEMPT)) + 1
    tracker.log_metrics(run_id, {names.TRIAL_ATTEMPT: attempt}, step=attempt)
    if attempt == 1:  # MLflow lists a dataset input once per log call: record the data once per trial
        tracker.log_datasets(run_id, [split_record(data_uri, split) | {"context": context}
                                      for split, context in (("train", "training"), ("test", "testing"))])
    resources = cfg.resources
    run_folder = layout.train_run_folder(cfg, trial_name)
    started = time.time()
    # A retry after post-processing failed, or a sweep resumed after training ended, needs no Train workers.
    latest = latest_checkpoint(cfg, run_folder)
    metrics, ckpt = trained_before(cfg, latest, tracker, run_id) or \
        _fit(cfg, config, tracker, run_id, data_uri, trial_name, run_folder, latest)
    wall = time.time() - started
    final = {k: v for k, v in metrics.items() if k in names.TEST_METRICS} | {names.WALL_TIME: wall}
    tracker.log_metrics(run_id, final, step=metrics.get("step"))
    with ckpt.as_directory() as folder:  # a local folder, whatever the storage
        file = f"{folder}/{CHECKPOINT_FILE}"
        tracker.log_artifact(run_id, file, names.CHECKPOINT_ARTIFACTS)
        try:  # the model view of the same file: the checkpoint artifact above is what must not be lost
            log_trial_model(tracker, run_id, file, f"ardm-{trial_label(config, searched)}",
                            {k: v for k, v in final.items() if k in (names.TEST_BPD, names.TEST_BPD_STDERR)},
                            cfg.tracking.register_model)
        except Exception as err:
            warnings.warn(f"run {run_id}: the model was not logged to MLflow ({failure_reason(err)})", stacklevel=1)
    checkpoint = layout.checkpoint_file(cfg, ckpt.path)
    layout.point_latest(cfg, trial_name, ckpt.path)
    data = f"parquet:{data_uri}"
    tracker.set_tags(run_id, {names.CHECKPOINT_TAG: checkpoint, names.DATA_TAG: data})
    if cfg.postprocess.enabled:
        # Training's results are logged above: a failure from here on keeps them (and the checkpoint).
        try:
            done = postprocess_checkpoint(checkpoint, data, layout.postprocess_folder(cfg, trial_name),
                                          cfg.postprocess, seed=cfg.train.seed, use_gpu=resources.use_gpu)
            tracker.log_metrics(run_id, done.metrics)
            tracker.log_curves(run_id, done.curves)
            tracker.log_artifact(run_id, done.folder, names.POSTPROCESS_ARTIFACTS)
        except Exception as err:
            tracker.end_run(run_id, "FAILED", reason=f"post-processing: {failure_reason(err)}")
            raise
        final[names.FULL_ELBO] = done.metrics[names.FULL_ELBO]  # the rest is in MLflow: Tune's table stays short
    tracker.end_run(run_id, "FINISHED")
    # The last training progress too: Tune's trial table keeps only the columns of each trial's last result.
    progress = {k: v for k, v in metrics.items() if k in PROGRESS_COLUMNS} | {ETA: "0:00:00"}
    tune.report({**progress, **final, FINISHED_CHECKPOINT: checkpoint})


def _fit(cfg: SweepConfig, config: dict, tracker: SweepTracker, run_id: str, data_uri: str, trial_name: str,
         run_folder: str, resume: KeptCheckpoint | None) -> tuple[dict, ray.train.Checkpoint]:
    """(the final Train result's metrics, its checkpoint) of the trial's Ray Train run in `run_folder`,
    started, or resumed from `resume`. A failure ends the trial's run FAILED with its reason."""
    resources, failure = cfg.resources, cfg.failure
    per_worker = {"CPU": resources.cpus_per_worker} | ({"GPU": resources.gpus_per_worker} if resources.use_gpu else {})
    # Ray Train reads its placement timeout from the environment, and passes this process's value on to
    # its controller: without it, a group that no node can take would be waited for forever.
    os.environ[WORKER_GROUP_START_TIMEOUT_S_ENV_VAR] = str(failure.placement_timeout_s)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config, "data_uri": data_uri, "tracker": tracker, "run_id": run_id,
                           "resume_from": resume and resume.file, "checkpoint_folder": run_folder},
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers_per_trial, use_gpu=resources.use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=trial_name, storage_path=layout.train_folder(cfg),
            failure_config=ray.train.FailureConfig(
                max_failures=failure.train_max_failures, max_preemption_failures=failure.preemption_max_restarts,
                controller_failure_limit=failure.placement_retries,
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback(), RestartLog(tracker, run_id)],
        ),
    )
    try:
        result = trainer.fit()
    except Exception as err:
        kept = latest_checkpoint(cfg, run_folder)
        if kept is not None:  # what a later resume starts from
            layout.point_latest(cfg, trial_name, kept.folder)
        root = root_cause(err)
        if isinstance(root, NonFiniteLossError):  # name the kept checkpoint on storage, not the worker's scratch
            root = root.kept_at(kept.file if kept else "none")
        plain = describe(root)
        reason = failure_reason_after_restart(err, tracker, run_id, plain, failure)
        tracker.end_run(run_id, "FAILED", reason=reason)
        if reason != plain:  # the sweep's summary says it too: the node lost, not Ray's timeout
            raise NodeLostError(reason) from err
        raise
    return result.metrics, result.checkpoint


def trained_before(cfg: SweepConfig, latest: KeptCheckpoint | None, tracker: SweepTracker, run_id: str
                   ) -> tuple[dict, ray.train.Checkpoint] | None:
    """(the final metrics, the checkpoint) of a trial whose training ended in an earlier attempt, as its Train
    run's result would hold them; None if training has steps left, or MLflow cannot say.

    Training ended when the trial's latest checkpoint is at its last step: the workers evaluated the test
    split before they stored that checkpoint, and logged the test metrics to the trial's run. A retry after
    post-processing failed, or a sweep resumed then, goes on from there without starting Train workers
    only to evaluate the same weights again. The run says from where it took up (names.RESUMED_FROM_STEP).
    """
    if latest is None or latest.step < cfg.train.steps:
        return None
    run = tracker.run_now(run_id)
    if run is None:  # the tracking server away: the workers evaluate again, and log through the outbox
        return None
    logged = run.data.metrics
    if not all(key in logged for key in names.TEST_METRICS):
        return None
    tracker.log_metrics(run_id, {names.RESUMED_FROM_STEP: latest.step}, step=latest.step)
    progress = {key: logged[key] for key in PROGRESS_COLUMNS if key in logged}
    metrics = progress | {key: logged[key] for key in names.TEST_METRICS} | {"step": latest.step}
    return metrics, ray.train.Checkpoint(latest.folder, filesystem=latest.filesystem)


class KeptCheckpoint(NamedTuple):
    """A checkpoint of a trial's Train run on storage that reads back: its file (a URI), its folder on
    `filesystem` (as Ray Train names a checkpoint's path), and the training step it holds."""

    file: str
    folder: str
    filesystem: pafs.FileSystem
    step: int


def latest_checkpoint(cfg: SweepConfig, run_folder: str) -> KeptCheckpoint | None:
    """The newest checkpoint in a Train run's folder that reads back, or None.

    Ray Train restores a run's checkpoints from its snapshot file, but a run cut off with its
    driver can leave checkpoints without one; then the trial resumes from what is on storage. A
    checkpoint cut off mid-upload does not read back and is passed over.
    """
    fs, path = filesystem(run_folder)
    found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    folders = sorted((f.path for f in found if f.type == pafs.FileType.Directory
                      and f.base_name.startswith("checkpoint_")), reverse=True)  # names are timestamps
    for folder in folders:
        uri = layout.checkpoint_file(cfg, folder)
        try:
            step = int(load_checkpoint(uri)["step"])
        except CheckpointError:
            continue
        return KeptCheckpoint(uri, folder, fs, step)
    return None


def failure_reason(err: BaseException) -> str:
    """One line naming the root cause: the first failed worker's own exception (or the controller's),
    not Ray's wrappers (WorkerGroupError's message starts "Training failed due to worker errors:")."""
    return describe(root_cause(err))


def root_cause(err: BaseException) -> BaseException:
    """The exception under Ray's wrappers: the first failed worker's own, or the controller's."""
    while True:
        failures = getattr(err, "worker_failures", None)
        if failures:
            err = failures[min(failures)]
        elif getattr(err, "cause", None) is not None:  # RayTaskError wraps the task's exception
            err = err.cause
        elif getattr(err, "controller_failure", None) is not None:  # ControllerError: e.g. no node took the group
            err = err.controller_failure
        else:
            return err

