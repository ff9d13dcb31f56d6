"""Fault: the sweep's own process (the Tune driver) interrupted twice on one sweep of two trials run
one after the other, then `ardm sweep --resume` to the end:

1. SIGINT (Ctrl-C) while the second trial trains: the driver exits 130 and the sweep's parent run
   ends KILLED saying how to go on.
2. `--resume`, then SIGKILL (a lost head node) while the second trial's step table is half computed:
   one table-range part is on storage, the other still running.
3. `--resume` again, to the end. Trial 2's training had ended: no Train run starts again, only its
   post-processing goes on.

Checked at the end: the first trial is never re-run and its post-processing files are untouched;
the second trial continued from its latest checkpoint (its early steps were trained once); its
finished table part was reused (not rewritten) and the other computed, the merged table being the one
an undisturbed one-pass computation gives, bit for bit; the parent run is the same one and FINISHED.

The two table ranges are of very unequal size (steps_per_call 60 on the 64 steps of a K = 17 model:
steps 0-59 in one task, 60-63 in the other), so the small part is on storage long before the large
one, and the SIGKILL comes as soon as it is there; with the driver go its trial and the trial's tasks.
(A SIGINT would not do there: Tune lets a running trial go on for seconds while it stops, long
enough to finish its table.)
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from ardm.checkpoint import load_model
from ardm.tables import StepTable, estimate_step_table, table_images
from orchestrator import names
from orchestrator.cli import main
from tests.support.nodes import actors  # one Ray Train controller per Train run started
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

STEPS, EVERY = 60, 20
STEPS_PER_CALL, SAMPLES = 60, 48  # 60 + 4 steps of 48 draws: the large range takes seconds, the small one a tenth
SEQUENTIAL = {
    **TINY,
    "sweep": {"max_concurrent_trials": 1},
    "model": {**TINY["model"], "branching": 17},
    "train": {"steps": STEPS, "batch_size": 32, "checkpoint_every": EVERY, "log_every": 20, "learning_rate": 0.002,
              "ema_decay": 0.9, "seed": {"grid": [0, 1]}},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "eval": {"samples_per_image": 1, "max_images": 16},
    "postprocess": {**TINY["postprocess"], "budgets": [3, "full"], "table_ranges": 2, "steps_per_call": STEPS_PER_CALL,
                    "table_samples_per_step": SAMPLES, "sample_grid": 0},
}
# The pace of the test's looks, not a wait for anything: at the sweep's files, cheap and fast (the SIGKILL
# must come while the large table part still runs); at MLflow, each look a query its server answers (at
# 0.02 s the server and this process took most of a core from the sweep they watch).
FILES_POLL_S, MLFLOW_POLL_S = 0.02, 0.5


def _start(path: Path, log: Path, address: str, *args: str) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(path), *args], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": address})


def _wait_until(condition, what: str, driver: subprocess.Popen, every: float, timeout: float = 300.0) -> None:
    """Poll `condition` every `every` s until it holds; fail if the driver exits first (the timeout is a
    safety net, not a timing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if driver.poll() is not None:
            pytest.fail(f"the driver exited ({driver.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(every)


def _stop(driver: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        driver.send_signal(sig)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()


def _the_trial(trials: list, finished: bool) -> mlflow.entities.Run:
    """The one trial run among `trials` that is FINISHED (or, with finished=False, that is not); a clear
    failure, not a StopIteration, when a poll found none or more than one."""
    found = [r for r in trials if (r.info.status == "FINISHED") == finished]
    assert len(found) == 1, (f"expected one {'finished' if finished else 'unfinished'} trial, got "
                             f"{[(r.data.tags.get('ardm.trial'), r.info.status) for r in trials]}")
    return found[0]


def _parts(root: Path, trial: str) -> dict[str, Path]:
    """A trial's step-table parts on the sweep's storage, by file name."""
    return {p.name: p for p in (root / "postprocess" / trial).glob("*/tables/parts/steps-*.parquet")}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_interrupted_driver_resumes_without_redoing_work(ray_cluster, mlflow_server, tmp_path):
    name = "driver-interrupted"
    path = write_sweep(tmp_path, name, SEQUENTIAL, mlflow_server)
    root = tmp_path / "storage" / name

    # 1. SIGINT while the second trial trains.
    driver = _start(path, tmp_path / "first.log", ray_cluster.address)

    def first_done_second_checkpointed() -> bool:
        if mlflow.MlflowClient(mlflow_server).get_experiment_by_name(name) is None:
            return False
        _, _, trials = sweep_runs(mlflow_server, name)
        unfinished = [r for r in trials if r.info.status != "FINISHED"]
        if len(trials) != 2 or len(unfinished) != 1:
            return False
        return any((root / "train" / unfinished[0].data.tags[names.TRIAL_TAG]).glob("checkpoint_*"))

    try:
        _wait_until(first_done_second_checkpointed, "trial 1 finished and trial 2 checkpointed", driver,
                    MLFLOW_POLL_S)
    finally:
        _stop(driver, signal.SIGINT)
    console = (tmp_path / "first.log").read_text()
    assert driver.returncode == 130, console[-3000:]
    # The console shows Tune's table, not the workers' per-report lines or Ray's internal warnings.
    assert "== Status ==" in console and "(RayTrainWorker pid=" not in console and "PreemptionWatcher" not in console
    client, parents, trials = sweep_runs(mlflow_server, name)
    assert len(parents) == 1, f"{len(parents)} sweep runs"
    first = _the_trial(trials, finished=True)
    second = _the_trial(trials, finished=False)  # fails if the second trial finished before the signal
    assert parents[0].info.status == "KILLED" and "--resume" in parents[0].data.tags[names.FAILURE_REASON_TAG]
    kept = {p: p.stat().st_mtime_ns for p in (root / "postprocess" / first.data.tags[names.TRIAL_TAG]).rglob("*")
            if p.is_file() and p.parent.name != "artifacts"}
    assert kept

    # 2. --resume, then SIGKILL once one of the second trial's two table parts is on storage.
    trial = second.data.tags[names.TRIAL_TAG]
    driver = _start(path, tmp_path / "second.log", ray_cluster.address, "--resume")
    try:
        _wait_until(lambda: _parts(root, trial), "a table part of trial 2 was on storage", driver, FILES_POLL_S)
    finally:
        _stop(driver, signal.SIGKILL)
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "second.log").read_text()[-3000:]
    parts = _parts(root, trial)
    assert len(parts) == 1, f"parts on storage when the driver was killed: {sorted(parts)}"
    [(finished, part)] = parts.items()
    part_before = (part.stat().st_mtime_ns, _digest(part))

    # 3. --resume to the end: trial 2's training had ended, so only its post-processing goes on (no Train run).
    controllers = len(actors("TrainController"))
    assert main(["sweep", str(path), "--resume"]) == 0
    assert len(actors("TrainController")) == controllers, "a Train run was started for a trial whose training had ended"
    _, parents_after, trials_after = sweep_runs(mlflow_server, name)
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    assert sorted(r.info.run_id for r in trials_after) == sorted(r.info.run_id for r in trials)
    assert [m.step for m in client.get_metric_history(first.info.run_id, names.TRIAL_ATTEMPT)] == [1], "re-run"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "finished post-processing was redone"
    resumed = client.get_run(second.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.metrics["bpd_measured"] > 0
    # The first resume continued training from a checkpoint (not from scratch); the second found it
    # trained to the end.
    starts = [m.value for m in sorted(client.get_metric_history(second.info.run_id, names.RESUMED_FROM_STEP),
                                      key=lambda m: m.timestamp)]
    assert starts[0] in range(EVERY, STEPS + 1, EVERY) and starts[-1] == STEPS, starts
    history = [m.step for m in client.get_metric_history(second.info.run_id, "train_bpd")]
    assert history.count(20) == 1 and max(history) == STEPS
    after = _parts(root, trial)
    assert len(after) == 2 and (after[finished].stat().st_mtime_ns, _digest(after[finished])) == part_before, (
        "the finished table part was computed again")
    # The merged table is what one undisturbed pass over every step gives with the same draws.
    merged = StepTable.load(str(after[finished].parents[1] / "step_table.parquet"))
    model = load_model(resumed.data.tags[names.CHECKPOINT_TAG], ema=True)
    seed = int(resumed.data.params["train.seed"])  # post-processing's seed is the trial's
    images, _ = table_images(resumed.data.tags[names.DATA_TAG], "train", 0, seed)
    reference = estimate_step_table(model, images, SAMPLES, steps_per_call=STEPS_PER_CALL, seed=seed)
    assert np.array_equal(merged.nll_bits, reference.nll_bits)
    assert np.array_equal(merged.stderr_bits, reference.stderr_bits, equal_nan=True)
