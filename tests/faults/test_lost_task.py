"""Fault: a post-processing Ray task lost mid-run (its worker process SIGKILLed, as a preempted
node would lose it).

Ray retries the task (max_retries=3); the post-processing run finishes and its metrics equal,
number for number, those of an undisturbed run of the same checkpoint and settings. Both the
step-table range tasks and the per-budget measurement tasks are killed in turn, and a whole node is
lost while it runs a table task (`Cluster.remove_node`: its raylet and every process on it killed).

The killer does not rely on Ray's state API to find the task: that reports with a delay, so a task
could finish before it was ever listed as running. A Ray worker names its process `ray::<task>`
while it executes a task, so the killer watches this test's own process tree (not another test
run's Ray on the same machine) for that name, stops the process, checks that the name still holds
(the task is frozen mid-run, it cannot have finished in between), and only then kills it.
"""

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import ray
from ray._raylet import RAY_NODE_ID_KEY
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.state import list_tasks, list_workers

from orchestrator.config import PostprocessSection
from orchestrator.postprocess import postprocess_checkpoint
from tests.support.processes import own_processes, stat, title
from tests.support.reference import checkpoint_of

pytestmark = pytest.mark.slow

# Enough work per task (seconds of CPU each) that the task outlives many of the killer's polls.
SETTINGS = PostprocessSection(budgets=(4, 16, "full"), table_samples_per_step=24, table_ranges=2, steps_per_call=8,
                              max_images=64, orders_per_image=2, sample_grid=4)
POLL_S = 0.02  # the killer's pace: a task runs for far longer than this
STATE_TIMEOUT_S = 300.0  # a safety net for the state API to catch up, not a timing that matters


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _kill_one_running(name: str, killed: list[int], stop: threading.Event, fault: Callable[[int], None] = _kill
                      ) -> None:
    """Until `stop`, or until one is hit: apply `fault` (by default SIGKILL) to the worker process of a
    task `name` caught running in this test's Ray cluster, and note its pid. A process titled
    `ray::<name>` is stopped first and hit only if its title still says so once it has stopped, i.e.
    if it is still inside the task."""
    name = f"ray::{name}"
    while not stop.is_set():
        for pid in own_processes(name):
            if title(pid) != name:
                continue  # a task of another name that starts alike
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                while stat(pid)[:1] in (["R"], ["S"], ["D"]):
                    pass  # the stop takes effect within microseconds (after a disk wait, at most)
                if title(pid) == name:
                    fault(pid)
                    killed.append(pid)
                    return
                os.kill(pid, signal.SIGCONT)  # it finished its task just before the stop: leave it
        stop.wait(POLL_S)


def _attempts(address: str, name: str, since_ms: float, lost_pid: int) -> tuple[list, set[str]]:
    """(every attempt of the tasks called `name` created after `since_ms`, the ids of the tasks whose
    attempt the worker `lost_pid` was running), once the state API has caught up (its events arrive
    with a delay): the lost attempt is listed and every task has finished; or after STATE_TIMEOUT_S.

    A worker killed this early may not have reported its pid with the attempt: the attempt is found
    by the worker's id, which Ray's worker table gives for the pid."""
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while True:
        try:
            workers = {w.worker_id for w in list_workers(address, filters=[("pid", "=", str(lost_pid))], detail=True)}
            attempts = [a for a in list_tasks(address, filters=[("name", "=", name)], limit=1000, detail=True)
                        if (a.creation_time_ms or 0) >= since_ms]
        except ConnectionError:  # the state API's calls time out on a loaded machine: ask again
            workers, attempts = set(), []
        lost = {a.task_id for a in attempts if a.state == "FAILED" and a.worker_id in workers}
        finished = {a.task_id for a in attempts if a.state == "FINISHED"}
        if (lost and finished == {a.task_id for a in attempts}) or time.monotonic() > deadline:
            return attempts, lost
        time.sleep(0.5)


def _post_process_hitting_one(ckpt: str, task: str, fault: Callable[[int], None], tmp_path):
    """(the post-processing result, [pid hit]) of a run of SETTINGS during which `fault` befell the
    worker process of one running task `task` (_kill_one_running, on a thread)."""
    hit, stop = [], threading.Event()
    hitter = threading.Thread(target=_kill_one_running, args=(task, hit, stop, fault))
    hitter.start()
    try:
        result = postprocess_checkpoint(ckpt, "digits", str(tmp_path / "pp"), SETTINGS, seed=3)
    finally:
        stop.set()
        hitter.join()
    return result, hit


@pytest.fixture(scope="module")
def undisturbed(ray_cluster, trained_digits, tmp_path_factory):
    """(checkpoint, (metrics, curves)) of a post-processing run that nothing interrupted."""
    folder = tmp_path_factory.mktemp("undisturbed")
    ckpt = str(checkpoint_of(trained_digits[0], folder / "c.pt"))
    done = postprocess_checkpoint(ckpt, "digits", str(folder / "pp"), SETTINGS, seed=3)
    return ckpt, (done.metrics, done.curves)


@pytest.mark.parametrize("task", ["_table_range", "measure_budget_task"])
def test_a_killed_task_is_retried_and_changes_no_number(ray_cluster, undisturbed, task, tmp_path):
    ckpt, expected = undisturbed
    since_ms = time.time() * 1000
    result, killed = _post_process_hitting_one(ckpt, task, _kill, tmp_path)
    assert killed, f"no {task} task was seen running"
    attempts, lost = _attempts(ray_cluster.address, task, since_ms, killed[0])
    assert lost, f"no running {task} task was hit: {[(a.attempt_number, a.state, a.worker_id) for a in attempts]}"
    for task_id in lost:
        assert any(a.task_id == task_id and a.state == "FINISHED" for a in attempts), "a lost task was not retried"
    assert (result.metrics, result.curves) == expected


@contextlib.contextmanager
def _tasks_only_on_a_new_node(cluster) -> Iterator[object]:
    """A node added to the session's cluster, the only one with CPUs free for tasks while the block
    runs until `release` (placement groups hold every other node's free CPUs); removed at the end if
    still there. Yields (node, release)."""
    free = ray._private.state.available_resources_per_node()
    holds = [placement_group([{"CPU": res["CPU"]}], bundle_label_selector=[{RAY_NODE_ID_KEY: node_id}])
             for node_id, res in free.items() if res.get("CPU", 0) >= 1]
    ray.get([hold.ready() for hold in holds])
    node = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()

    def release() -> None:
        while holds:
            remove_placement_group(holds.pop())

    try:
        yield node, release
    finally:
        release()
        if node in cluster.worker_nodes:  # the session's cluster as it was: later tests count its CPUs
            cluster.remove_node(node)


def test_a_node_lost_mid_table_task_is_retried_elsewhere_and_changes_no_number(ray_cluster, undisturbed, tmp_path):
    ckpt, expected = undisturbed
    with _tasks_only_on_a_new_node(ray_cluster) as (node, release):
        def lose_the_node(pid: int) -> None:
            """The task runs on the new node (no other has a CPU free): the node goes, with every process on
            it; the retries find the other nodes' CPUs free (released whatever happens here: else the
            test would wait for them forever)."""
            try:
                ray_cluster.remove_node(node)
                with contextlib.suppress(ProcessLookupError):  # the raylet's cleanup may have killed it already
                    os.kill(pid, signal.SIGKILL)  # stopped above: it cannot exit with its raylet on its own
            finally:
                release()

        result, hit = _post_process_hitting_one(ckpt, "_table_range", lose_the_node, tmp_path)
    assert hit, "no _table_range task was seen running on the new node"
    assert node not in ray_cluster.worker_nodes
    assert (result.metrics, result.curves) == expected
