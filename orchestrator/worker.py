"""The Ray Train worker loop: ardm.train.train on this worker's Parquet shard, under DDP.

Every rank reads its own shard, builds the same model, and trains; rank 0 writes checkpoints,
which are reported to Ray Train (and so persisted to the sweep's storage), logs metrics to the
trial's MLflow run, and evaluates the test bpd with the final checkpoint. A restarted worker
group resumes from `ray.train.get_checkpoint()`. When Ray drains a node of the group for preemption,
the workers checkpoint at once and train no further (`_Preemption`).
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ardm.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint, load_model
from ardm.config import build
from ardm.data import ImageDataset, load_parquet_split
from ardm.evaluate import estimate_nelbo
from ardm.model import ARDM, build_ardm
from ardm.run import model_spec
from ardm.storage import read_file, space_for
from ardm.train import train
from orchestrator import names
from orchestrator.config import SweepConfig
from orchestrator.tracking import SweepTracker, system_metrics

ETA = "eta"  # time left in the trial's training, as h:mm:ss: reported to Tune, not logged to MLflow
# The columns of Tune's trial table (orchestrator.sweep): one line per trial, with what this worker reports.
PROGRESS_COLUMNS = {"step": "step", "loss": "loss", "train_bpd": "bpd", "images_per_sec": "images/s", ETA: "ETA"}


class _Eta:
    """Time left to `total` steps at the pace of the steps this worker has trained so far."""

    def __init__(self, total: int) -> None:
        self.total, self.start = total, None

    def __call__(self, step: int) -> str:
        now = time.monotonic()
        if self.start is None:  # the first log of this run (after a resume too): the pace starts here
            self.start = (step, now)
            return "?"
        done, elapsed = step - self.start[0], now - self.start[1]
        left = max(self.total - step, 0) * elapsed / done if done > 0 else 0.0
        return str(datetime.timedelta(seconds=round(left)))


class _MetricsToMlflow:
    """Logs rank 0's metrics to the trial's run; tracking never stops training.

    The sweep's tracker has an outbox: during an outage it keeps the metrics there, with their steps
    and times, warns once and returns at once; they are delivered when the server answers again (or by
    `ardm sync`). What still fails here, MLflow refusing a batch or an outage with a tracker that has
    no outbox, is warned about once and dropped: the tracking server is not worth a lost training run.
    """

    def __init__(self, tracker: SweepTracker, run_id: str) -> None:
        self.tracker, self.run_id, self.warned = tracker, run_id, False

    def __call__(self, metrics: dict, step: int | None) -> None:
        try:
            self.tracker.log_metrics(self.run_id, metrics, step=step)
        except Exception as err:
            if not self.warned:
                warnings.warn(f"MLflow logging failed, training goes on without these metrics: {err}", stacklevel=2)
                self.warned = True


class _Preemption:
    """A drain notice for a node of this worker group (a spot reclaim, `ray drain-node`): checkpoint at
    once, then train no further.

    At the drain's deadline Ray Train tears the group down and restarts it on other nodes from the
    latest checkpoint. Steps trained after the notice's checkpoint would be lost with the node and
    trained again, so the worker waits for the teardown instead: the restart repeats nothing.
    """

    def __init__(self) -> None:
        self.noticed = False

    def checkpoint_now(self) -> bool:
        """True at the first log step after a notice. Every rank calls it as often (Ray Train agrees on
        one answer for all: a barrier), and after the notice none does any more."""
        if not self.noticed:
            self.noticed = ray.train.get_preemption_info() is not None
            return self.noticed
        return False

    def wait_for_teardown(self) -> None:
        """After the notice's checkpoint: block until Ray Train stops this worker."""
        if self.noticed:
            threading.Event().wait()


def train_worker(loop_config: dict) -> None:
    """Entry point of each Ray Train worker. loop_config: {"config": resolved trial config dict,
    "data_uri": Parquet shards, "tracker": SweepTracker, "run_id": the trial's MLflow run,
    "resume_from": a checkpoint file or None, "checkpoint_folder": where Ray Train stores the checkpoints}."""
    cfg: SweepConfig = build(SweepConfig, loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    shard, model, wrap = rank_setup(cfg, loop_config["data_uri"], rank, world, device)
    to_mlflow = _MetricsToMlflow(loop_config["tracker"], loop_config["run_id"]) if rank == 0 else None
    eta = _Eta(cfg.train.steps)

    preemption = _Preemption()

    def on_log(metrics: dict) -> bool:
        if to_mlflow is not None:
            to_mlflow({k: v for k, v in metrics.items() if k != "step"}, metrics["step"])
        ray.train.report({**metrics, ETA: eta(metrics["step"])})
        return preemption.checkpoint_now()

    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "ckpt"

        def on_checkpoint(path: Path | None, metrics: dict) -> None:
            # Every rank reports (a barrier); only rank 0 has a checkpoint to persist. The final
            # checkpoint carries the test bpd: Ray Train's result holds the latest checkpoint's metrics.
            checkpoint = None
            if path is not None:
                if metrics.get("step") == cfg.train.steps:
                    metrics = {**metrics, **test_metrics(path)}
                checkpoint = ray.train.Checkpoint.from_directory(str(path.parent))
            # Ray Train copies the checkpoint to storage here: out of space, the trial's failure reason is
            # one line naming the folder and its free space (a copy cut short does not read back, and
            # trial.latest_checkpoint passes over it).
            folder = loop_config["checkpoint_folder"]
            with space_for(folder, local="://" not in folder):
                ray.train.report(metrics, checkpoint=checkpoint)
            if metrics.get("step") != cfg.train.steps:  # the final checkpoint ends training anyway
                preemption.wait_for_teardown()

        def test_metrics(path: Path) -> dict:
            """Negative ELBO (bpd) of the EMA weights on the test split, logged to MLflow as well."""
            test = load_parquet_split(loop_config["data_uri"], "test")
            images, _ = test.subset(cfg.eval.max_images, seed=cfg.train.seed)
            ema = load_model(path, ema=True, map_location=device)
            est = estimate_nelbo(ema, images, cfg.eval.samples_per_image, cfg.eval.batch_size, seed=cfg.train.seed)
            found = {names.TEST_BPD: est.mean, names.TEST_BPD_STDERR: est.stderr, names.TEST_IMAGES: est.n}
            to_mlflow(found, cfg.train.steps)
            return found

        resume_from, resumed_step = _resume_point(loop_config.get("resume_from"), Path(scratch) / "resume")
        if resumed_step is not None and to_mlflow is not None:  # say from where, in the trial's run
            to_mlflow({names.RESUMED_FROM_STEP: resumed_step}, resumed_step)
        tracker = loop_config["tracker"]
        interval = cfg.tracking.system_metrics_interval_s if rank == 0 else 0
        with system_metrics(tracker.uri, loop_config["run_id"], interval):
            result = train(
                model, shard.images, cfg.train, device=device, checkpoint_path=local / CHECKPOINT_FILE,
                resume_from=resume_from, rank=rank, wrap=wrap, on_log=on_log, on_checkpoint=on_checkpoint,
                extra={"data": cfg.data.spec, "data_uri": loop_config["data_uri"], "world_size": world},
                progress=False,
            )
        if resumed_step is not None and resumed_step >= cfg.train.steps:
            # The run had finished before this restart: nothing was trained, so report its final
            # checkpoint again, with the test bpd, for this Train run's result to carry it.
            path = None
            if rank == 0:
                local.mkdir(parents=True, exist_ok=True)
                path = Path(shutil.copy(resume_from, local / CHECKPOINT_FILE))
            on_checkpoint(path, {**result.metrics, "step": result.step})


def rank_setup(
    cfg: SweepConfig, data_uri: str, rank: int, world: int, device: torch.device
) -> tuple[ImageDataset, ARDM, Callable[[nn.Module], nn.Module]]:
    """(this rank's train shard, the model, the wrap that `train` applies to it) for rank `rank` of `world`.

    Every rank builds the same initial weights; with more than one worker the wrap is DistributedDataParallel
    (the default process group must be initialised), which averages the gradients of all ranks at each step.
    """
    shard = load_parquet_split(data_uri, "train", rank=rank, world_size=world)
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
    model = build_ardm(model_spec(cfg.model, shard))

    def wrap(module: nn.Module) -> nn.Module:
        if world == 1:
            return module
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    return shard, model, wrap


def _resume_point(fallback: str | None, folder: Path) -> tuple[Path | None, int | None]:
    """(local checkpoint file, its step) to resume from, or (None, None) for a fresh start.

    Ray Train's latest registered checkpoint comes first (a restarted worker group, or a Train run
    with the same name restored from its snapshot); else `fallback`, the newest readable checkpoint
    the trial found in its Train run's folder (a sweep resumed after its driver was interrupted).
    """
    previous = ray.train.get_checkpoint()
    if previous is not None:
        previous.to_directory(str(folder))
    elif fallback is not None:
        payload = read_file(fallback, CheckpointError)
        if payload is None:
            raise CheckpointError(f"{fallback}: checkpoint file not found")
        with space_for(folder / CHECKPOINT_FILE):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / CHECKPOINT_FILE).write_bytes(payload)
    else:
        return None, None
    return folder / CHECKPOINT_FILE, int(load_checkpoint(folder / CHECKPOINT_FILE)["step"])
