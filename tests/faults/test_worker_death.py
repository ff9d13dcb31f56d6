"""Fault: a Ray Train worker process killed mid-training (SIGKILL, not a flag in the loop).

Two identical trials run side by side; one worker is killed once both have checkpoints. Ray
Train restarts that worker group from the trial's latest checkpoint, the trial finishes with the
same step count, and its final weights equal those of the uninterrupted twin, bit for bit (CPU,
per-step seeding).
"""

import os
import signal
import threading
import time

import pytest
import torch

from ardm.checkpoint import load_checkpoint
from orchestrator.cli import main
from tests.support.processes import own_processes
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

STEPS, EVERY = 80, 20
TWINS = {
    **TINY,
    "sweep": {"num_samples": 2, "max_concurrent_trials": 2},
    "model": {"preset": "cpu-tiny", "branching": 17},
    "train": {"steps": STEPS, "batch_size": 32, "checkpoint_every": EVERY, "log_every": 10, "learning_rate": 0.002,
              "ema_decay": 0.9},
    "eval": {"samples_per_image": 1, "max_images": 20},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "failure": {"train_max_failures": 2, "trial_max_failures": 0},
    "postprocess": {"enabled": False},
}


def _kill_a_worker_after_two_checkpoints(train_dir, killed: list, stop: threading.Event) -> None:
    """Wait until both trials wrote two checkpoints, then SIGKILL one live Ray Train worker process.

    Two, because Ray Train registers a reported checkpoint shortly after the worker wrote it: the
    earlier one is surely registered, so the killed trial has a checkpoint to resume from.
    """
    while not stop.is_set():
        trials = [d for d in train_dir.glob("*") if d.is_dir()] if train_dir.is_dir() else []
        if len(trials) == 2 and all(len(list(d.glob("checkpoint_*"))) >= 2 for d in trials):
            alive = list(own_processes("ray::RayTrainWorker"))
            if alive:
                os.kill(alive[0], signal.SIGKILL)
                killed.append(alive[0])
                return
        time.sleep(0.2)


def test_killed_worker_resumes_from_checkpoint_and_matches_its_twin(ray_cluster, mlflow_server, tmp_path):
    path = write_sweep(tmp_path, "worker-death", TWINS, mlflow_server)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_a_worker_after_two_checkpoints,
                              args=(tmp_path / "storage" / "worker-death" / "train", killed, stop))
    killer.start()
    try:
        assert main(["sweep", str(path)]) == 0
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed: training ended before the first checkpoints"
    client, _, trials = sweep_runs(mlflow_server, "worker-death")
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    resumed = [r for r in trials if "resumed_from_step" in r.data.metrics]
    assert len(resumed) == 1, "exactly the killed trial restarted"
    start = resumed[0].data.metrics["resumed_from_step"]
    assert start >= EVERY and start % EVERY == 0, "it resumed from a checkpoint, not from scratch"
    history = [m.step for m in client.get_metric_history(resumed[0].info.run_id, "train_bpd")]
    assert history.count(10) == 1 and max(history) == STEPS  # the steps before its first checkpoint ran once
    finals = [load_checkpoint(r.data.tags["ardm.checkpoint"]) for r in trials]
    assert [f["step"] for f in finals] == [STEPS, STEPS]
    for key in ("model", "ema"):
        for name, tensor in finals[0][key].items():
            assert torch.equal(tensor, finals[1][key][name]), f"{key}.{name} differs from the uninterrupted twin"
