"""Fault: a post-processing Ray task lost mid-run (its worker process SIGKILLed, as a preempted
node would lose it).

Ray retries the task (max_retries=3); the post-processing run finishes and its metrics equal,
number for number, those of an undisturbed run of the same checkpoint and settings. Both the
step-table range tasks and the per-budget measurement tasks are killed in turn.
"""

import contextlib
import os
import signal
import threading
import time

import pytest
from ray.util.state import list_tasks

from orchestrator.config import PostprocessSection
from orchestrator.postprocess import postprocess_checkpoint

from reference import checkpoint_of

pytestmark = pytest.mark.slow

# Enough work per task (tens of seconds of CPU in all) that a task is surely caught running.
SETTINGS = PostprocessSection(budgets=(4, 16, "full"), table_samples_per_step=48, table_ranges=2, steps_per_call=8,
                              max_images=120, orders_per_image=2, sample_grid=4)


def _kill_running(name: str, killed: list, stop: threading.Event) -> None:
    """Until `stop`: SIGKILL the worker process of each first attempt of task `name` seen running,
    and note its pid. The state API reports with a delay, so a task seen running may have just
    finished: killing every one seen makes sure running ones are hit. Retries are left alone."""
    seen: set[str] = set()
    while not stop.is_set():
        for task in list_tasks(filters=[("name", "=", name), ("state", "=", "RUNNING")], limit=100):
            if task.attempt_number == 0 and task.worker_pid and task.task_id not in seen:
                seen.add(task.task_id)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(task.worker_pid, signal.SIGKILL)
                killed.append(task.worker_pid)
        time.sleep(0.05)


def _attempts(name: str, since_ms: float, timeout: float = 30.0) -> list:
    """Every attempt of the tasks called `name` created after `since_ms`, once the state API has
    caught up (its task events arrive with a delay): until each of them finished, or `timeout`."""
    deadline = time.time() + timeout
    while True:
        attempts = [a for a in list_tasks(filters=[("name", "=", name)], limit=1000, detail=True)
                    if (a.creation_time_ms or 0) >= since_ms]
        finished = {a.task_id for a in attempts if a.state == "FINISHED"}
        if (attempts and finished == {a.task_id for a in attempts}) or time.time() > deadline:
            return attempts
        time.sleep(0.5)


@pytest.fixture(scope="module")
def undisturbed(ray_cluster, trained_digits, tmp_path_factory):
    """(checkpoint, metrics) of a post-processing run that nothing interrupted."""
    folder = tmp_path_factory.mktemp("undisturbed")
    ckpt = str(checkpoint_of(trained_digits[0], folder / "c.pt"))
    return ckpt, postprocess_checkpoint(ckpt, "digits", str(folder / "pp"), SETTINGS, seed=3).metrics


@pytest.mark.parametrize("task", ["_table_range", "_measure_budget"])
def test_a_killed_task_is_retried_and_changes_no_number(undisturbed, task, tmp_path):
    ckpt, expected = undisturbed
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_running, args=(task, killed, stop))
    since_ms = time.time() * 1000
    killer.start()
    try:
        result = postprocess_checkpoint(ckpt, "digits", str(tmp_path / "pp"), SETTINGS, seed=3)
    finally:
        stop.set()
        killer.join()
    assert killed, f"no {task} task was seen running"
    attempts = _attempts(task, since_ms)
    lost = {a.task_id for a in attempts if a.state == "FAILED" and a.worker_pid in killed}
    assert lost, f"no running {task} task was hit: {[(a.attempt_number, a.state) for a in attempts]}"
    for task_id in lost:
        assert any(a.task_id == task_id and a.state == "FINISHED" for a in attempts), "a lost task was not retried"
    assert result.metrics == expected
