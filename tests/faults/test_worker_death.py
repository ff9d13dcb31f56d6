"""Faults: a Ray Train worker process killed mid-training (SIGKILL, not a flag in the loop) while the
MLflow tracking server is down (a real `mlflow server`, SIGKILLed), in one sweep of two identical
trials run side by side. Each step waits on what the sweep writes to storage, never on time:

1. both trials wrote a checkpoint: the server is killed. Training goes on; what the trials log is
   kept in the sweep's outbox;
2. both trials wrote two checkpoints: one Train worker is killed. Ray Train restarts that worker
   group from the trial's latest checkpoint with the server still down (the restart's count and
   cause are kept too, and reading the count does not stall the restart on MLflow's retries);
3. both trials wrote a checkpoint since the kill (the killed one after its restart): the server is
   started again.

The killed trial finishes with the same step count, and its final weights equal those of the
uninterrupted twin, bit for bit (CPU, per-step seeding). What was logged during the outage reaches
the runs with its steps and the times it was logged at, and the outbox ends empty.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from ardm.checkpoint import load_checkpoint
from orchestrator import names
from orchestrator.cli import main
from tests.support.mlflow_server import MlflowServer
from tests.support.processes import own_processes
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

STEPS, EVERY = 80, 10
TWINS = {
    **TINY,
    "sweep": {"num_samples": 2, "max_concurrent_trials": 2},
    "model": {"preset": "cpu-tiny", "branching": 17},
    "train": {"steps": STEPS, "batch_size": 32, "checkpoint_every": EVERY, "log_every": EVERY,
              "learning_rate": 0.002, "ema_decay": 0.9},
    "eval": {"samples_per_image": 1, "max_images": 20},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "failure": {"train_max_failures": 2, "trial_max_failures": 0},
    "postprocess": {"enabled": False},
    # MLflow's system-metrics thread makes calls of its own, outside the outbox.
    "tracking": {"system_metrics_interval_s": 0},
}
POLL_S = 0.2  # the pace of the fault thread's looks at the sweep's files, not a wait for anything


def _checkpoints(train: Path) -> dict[str, set[str]]:
    """{trial folder: its checkpoint folders} of the sweep's training storage."""
    return {d.name: {c.name for c in d.glob("checkpoint_*")} for d in train.glob("*") if d.is_dir()}


def _kept_metrics(outbox: Path, key: str) -> dict[str, set[tuple[int, int]]]:
    """{run id: {(step, timestamp in ms)}} of metric `key` kept in the outbox (a line being written is skipped)."""
    kept: dict[str, set[tuple[int, int]]] = {}
    for path in outbox.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                call = json.loads(line)
            except json.JSONDecodeError:
                continue
            for name, _, timestamp, step in call.get("metrics", []) if call.get("op") == "metrics" else []:
                if name == key:
                    kept.setdefault(path.stem, set()).add((step, timestamp))
    return kept


def _faults(server: MlflowServer, root: Path, seen: dict, stop: threading.Event) -> None:
    """Kill the server, then a Train worker, then start the server again, each once the trials' checkpoints
    say so (see the module's docstring). Notes in `seen` what it did and what the outbox held."""

    def wait_until(condition) -> bool:
        while not condition():
            if stop.wait(POLL_S):
                return False
        return True

    def every_trial(condition) -> bool:
        found = _checkpoints(root / "train")
        return len(found) == 2 and all(condition(name, folders) for name, folders in found.items())

    if not wait_until(lambda: every_trial(lambda _, folders: len(folders) >= 1)):
        return
    server.kill()
    seen["server killed"] = True
    if not wait_until(lambda: every_trial(lambda _, folders: len(folders) >= 2)):
        return
    # Two checkpoints each: Ray Train registers a reported checkpoint shortly after the worker wrote it,
    # so the earlier one surely is, and the killed trial has a checkpoint to resume from.
    [pid, *_] = own_processes("ray::RayTrainWorker")
    before = _checkpoints(root / "train")
    os.kill(pid, signal.SIGKILL)
    seen["worker killed"] = pid
    if not wait_until(lambda: every_trial(lambda name, folders: folders - before[name])):
        return
    seen["kept"] = _kept_metrics(root / "tracking-outbox", "train_bpd")
    server.start()
    seen["server restarted"] = True


def test_a_worker_killed_during_a_tracking_outage_resumes_and_matches_its_twin(up, ray_cluster, tmp_path):
    path = write_sweep(tmp_path, "worker-death", TWINS, up.uri)
    root = tmp_path / "storage" / "worker-death"
    seen: dict = {}
    stop = threading.Event()
    faults = threading.Thread(target=_faults, args=(up, root, seen, stop))
    faults.start()
    try:
        code = main(["sweep", str(path)])
    finally:
        stop.set()
        faults.join()
    assert list(seen) == ["server killed", "worker killed", "kept", "server restarted"], (
        f"the sweep ended after only {list(seen)}")
    assert code == 0
    assert not list((root / "tracking-outbox").glob("*.jsonl")), "calls kept in the outage were not delivered"
    client, _, trials = sweep_runs(up.uri, "worker-death")
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    [resumed] = [r for r in trials if names.RESUMED_FROM_STEP in r.data.metrics]  # exactly the killed trial
    [twin] = [r for r in trials if r is not resumed]
    start = resumed.data.metrics[names.RESUMED_FROM_STEP]
    assert start >= EVERY and start % EVERY == 0, "it resumed from a checkpoint, not from scratch"
    # The restart, logged with the server down, arrived: its count and its cause.
    assert resumed.data.metrics[names.TRAIN_RESTARTS] == 1 and names.restart_cause_tag(1) in resumed.data.tags
    histories = {r.info.run_id: client.get_metric_history(r.info.run_id, "train_bpd") for r in trials}
    steps = [m.step for m in histories[resumed.info.run_id]]
    assert steps.count(EVERY) == 1 and max(steps) == STEPS  # the steps before its first checkpoint ran once
    assert sorted(m.step for m in histories[twin.info.run_id]) == list(range(EVERY, STEPS + 1, EVERY))
    # What was kept during the outage arrived, with its steps and the times it was logged at.
    assert seen["kept"], "no training metrics were kept during the outage"
    for run_id, kept in seen["kept"].items():
        assert kept <= {(m.step, m.timestamp) for m in histories[run_id]}, run_id
    finals = [load_checkpoint(r.data.tags[names.CHECKPOINT_TAG]) for r in trials]
    assert [f["step"] for f in finals] == [STEPS, STEPS]
    for key in ("model", "ema"):
        for name, tensor in finals[0][key].items():
            assert torch.equal(tensor, finals[1][key][name]), f"{key}.{name} differs from the uninterrupted twin"
