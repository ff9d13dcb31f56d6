"""Fault: the sweep's own process (the Tune driver) interrupted, by SIGINT and by SIGKILL, while
its second trial trains; then `ardm sweep --resume`.

The finished trial is not re-run and its post-processing files are reused untouched; the
interrupted trial continues from its latest checkpoint (its early steps are not trained twice);
the sweep's parent run is the same one, and ends FINISHED.
"""

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest

from orchestrator.cli import main
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

STEPS, EVERY = 60, 20
SEQUENTIAL = {
    **TINY,
    "sweep": {"max_concurrent_trials": 1},
    "train": {"steps": STEPS, "batch_size": 32, "checkpoint_every": EVERY, "log_every": 20, "learning_rate": 0.002,
              "ema_decay": 0.9},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "eval": {"samples_per_image": 1, "max_images": 16},
    "postprocess": {**TINY["postprocess"], "budgets": [3, "full"], "table_ranges": 1, "sample_grid": 0},
}


def _wait_until(condition, what: str, driver: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if driver.poll() is not None:
            pytest.fail(f"the driver exited ({driver.returncode}) before {what}")
        if time.time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.5)


def _the_trial(trials: list, finished: bool) -> mlflow.entities.Run:
    """The one trial run among `trials` that is FINISHED (or, with finished=False, that is not); a clear
    failure, not a StopIteration, when a poll found none or more than one."""
    found = [r for r in trials if (r.info.status == "FINISHED") == finished]
    assert len(found) == 1, (f"expected one {'finished' if finished else 'unfinished'} trial, got "
                             f"{[(r.data.tags.get('ardm.trial'), r.info.status) for r in trials]}")
    return found[0]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_driver_resumes_without_redoing_work(ray_cluster, mlflow_server, tmp_path, sig):
    name = f"driver-{sig.name.lower()}"
    path = write_sweep(tmp_path, name, SEQUENTIAL, mlflow_server)
    root = tmp_path / "storage" / name
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(path)], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})

    def first_done_second_checkpointed() -> bool:
        if mlflow.MlflowClient(mlflow_server).get_experiment_by_name(name) is None:
            return False
        _, _, trials = sweep_runs(mlflow_server, name)
        unfinished = [r for r in trials if r.info.status != "FINISHED"]
        if len(trials) != 2 or len(unfinished) != 1:
            return False
        return any((root / "train" / unfinished[0].data.tags["ardm.trial"]).glob("checkpoint_*"))

    try:
        _wait_until(first_done_second_checkpointed, "trial 1 finished and trial 2 checkpointed", driver)
        driver.send_signal(sig)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.close()
    expected = 130 if sig == signal.SIGINT else -signal.SIGKILL
    console = (tmp_path / "driver.log").read_text()
    assert driver.returncode == expected, console[-3000:]
    # The console shows Tune's table, not the workers' per-report lines or Ray's internal warnings.
    assert "== Status ==" in console and "(RayTrainWorker pid=" not in console and "PreemptionWatcher" not in console
    client, parents, trials = sweep_runs(mlflow_server, name)
    assert len(parents) == 1, f"{len(parents)} sweep runs"
    first = _the_trial(trials, finished=True)
    second = _the_trial(trials, finished=False)  # fails if the second trial finished before the signal
    if sig == signal.SIGINT:  # a graceful stop closes the parent run as interrupted, saying how to go on
        assert parents[0].info.status == "KILLED" and "--resume" in parents[0].data.tags["ardm.failure_reason"]
    kept = {p: p.stat().st_mtime_ns for p in (root / "postprocess" / first.data.tags["ardm.trial"]).rglob("*")
            if p.is_file() and p.parent.name != "artifacts"}
    assert kept

    assert main(["sweep", str(path), "--resume"]) == 0
    _, parents_after, trials_after = sweep_runs(mlflow_server, name)
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    assert sorted(r.info.run_id for r in trials_after) == sorted(r.info.run_id for r in trials)
    assert [m.step for m in client.get_metric_history(first.info.run_id, "trial_attempt")] == [1], "re-run"
    assert {p: p.stat().st_mtime_ns for p in kept} == kept, "finished post-processing was redone"
    resumed = client.get_run(second.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.metrics["bpd_measured"] > 0
    start = resumed.data.metrics["resumed_from_step"]
    assert start >= EVERY and start % EVERY == 0
    history = [m.step for m in client.get_metric_history(second.info.run_id, "train_bpd")]
    assert history.count(20) == 1 and max(history) == STEPS

