"""Nodes added to the session's Ray cluster for one test, and the faults that befall them mid-sweep.

A trial's Train worker that asks for WORKER_CPUS fits only on an added node (the session's nodes
have 3 CPUs), so the test knows which nodes it may lose. Until the trial's Train controller runs, a
placement group holds each added node's CPUs, so the trial itself (its driver and controller, on
the session's nodes) survives the loss. Every added node still there is removed at the end: later
tests see the two-node cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import ray
from ray._raylet import RAY_NODE_ID_KEY
from ray.core.generated import autoscaler_pb2
from ray.util.placement_group import placement_group, remove_placement_group

from tests.support.sweep_files import TINY

WORKER_CPUS = 4  # more than a session node has
# Training steps and checkpoint interval: each fault comes after a checkpoint, with training left to lose
# it in even on an idle machine (about 10 steps a second), after earlier faults' restarts too. A trial
# whose last fault leaves no node never gets to its last step: the steps cost nothing beyond that margin.
STEPS, EVERY = 400, 20
POLL_S = 0.5  # the pace of the fault thread's looks (at the GCS and storage): far shorter than what it waits for
# One tiny trial whose one Train worker fits only on an added node.
ONE_WORKER_ON_AN_ADDED_NODE = {
    **TINY,
    "sweep": {"num_samples": 1},
    "model": {"preset": "cpu-tiny", "branching": 17},
    "train": {"steps": STEPS, "batch_size": 16, "checkpoint_every": EVERY, "log_every": 10, "learning_rate": 0.002,
              "ema_decay": 0.9},
    "eval": {"samples_per_image": 1, "max_images": 10},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": WORKER_CPUS},
    "tracking": {"system_metrics_interval_s": 0},
    "postprocess": {"enabled": False},
}


def _wait(condition: Callable[[], object], stop: threading.Event) -> object:
    """Poll `condition` until it returns something true (returned) or `stop` is set (None)."""
    while not stop.is_set():
        found = condition()
        if found:
            return found
        time.sleep(POLL_S)
    return None


def actors(class_name: str, state: str | None = None) -> list[dict]:
    """The actors of a class in the session's cluster, those in `state` (e.g. "ALIVE") or all it has run
    (from its GCS: the state API may find another Ray instance of the machine)."""
    found = ray._private.state.actors(actor_state_name=state).values()
    return [a for a in found if a["ActorClassName"] == class_name]


class NodeFault:
    """Adds `nodes` nodes of WORKER_CPUS CPUs, held by placement groups; on a thread, once the trial's Train
    controller runs, frees them, then applies each of `faults` in turn, as `fault(cluster, node)`, to the node
    hosting the trial's Train worker: once that worker, on a node no earlier fault befell (a restarted group's),
    has had a checkpoint registered by Ray Train (so a restart has one to resume from)."""

    def __init__(self, cluster, nodes: int, train_dir: Path, faults: list[Callable]) -> None:
        self.cluster, self.count, self.train_dir, self.faults = cluster, nodes, train_dir, faults
        self.added: list = []
        self.placeholders: list = []
        self.hit: list[tuple[str, str]] = []  # (node id, IP) of each node a fault befell, in turn
        self.errors: list[BaseException] = []
        self.events: list[str] = []  # what happened when: printed, so a failing test's output shows it
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            if not _wait(lambda: actors("TrainController", "ALIVE"), self.stop):
                return
            self._free()
            self._note("controller up, added nodes freed")
            for fault in self.faults:
                worker = _wait(self._worker_on_a_node_not_hit, self.stop)
                if not worker:
                    return
                seen = time.time()
                if not _wait(lambda since=seen: self._checkpoint_registered_since(since), self.stop):
                    return
                node = next(n for n in self.added if n.node_id == worker["Address"]["NodeID"])
                self.hit.append((node.node_id, node.node_ip_address))
                self._note(f"fault on node {node.node_id}")
                fault(self.cluster, node)
                self._note("fault done")
        except BaseException as err:  # the test fails with it, not a silent thread
            self.errors.append(err)

    def _worker_on_a_node_not_hit(self) -> dict | None:
        """The trial's live Train worker, if it runs on a node no fault befell yet."""
        hit = {node for node, _ in self.hit}
        return next((w for w in actors("RayTrainWorker", "ALIVE") if w["Address"]["NodeID"] not in hit), None)

    def _checkpoint_registered_since(self, since: float) -> bool:
        """Ray Train registered a checkpoint of the trial (it then writes its snapshot) after `since`."""
        return any(p.stat().st_mtime > since for p in self.train_dir.glob("*/checkpoint_manager_snapshot.json"))

    def _note(self, event: str) -> None:
        self.events.append(f"{time.strftime('%H:%M:%S')} {event}")
        print(self.events[-1])

    def _free(self) -> None:
        while self.placeholders:
            remove_placement_group(self.placeholders.pop())

    def __enter__(self) -> NodeFault:
        self.added = [self.cluster.add_node(num_cpus=WORKER_CPUS) for _ in range(self.count)]
        self.cluster.wait_for_nodes()
        self.placeholders = [placement_group([{"CPU": WORKER_CPUS}], bundle_label_selector=[
            {RAY_NODE_ID_KEY: node.node_id}]) for node in self.added]
        ray.get([p.ready() for p in self.placeholders])
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._free()
        for node in self.added:  # the session's cluster as it was: later tests count its CPUs
            if node in self.cluster.worker_nodes:
                self.cluster.remove_node(node)
        if exc[0] is None and self.errors:
            raise self.errors[0]


def remove(cluster, node) -> None:
    """The node is lost: its raylet and every process on it killed."""
    cluster.remove_node(node)


def drain_for_preemption(deadline_s: int) -> Callable:
    """A fault: the node drained with the preemption reason, as a spot reclaim notice, `deadline_s` ahead;
    the GCS call of `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds N`."""

    def drain(cluster, node) -> None:
        deadline_ms = time.time_ns() // 1_000_000 + deadline_s * 1000
        accepted, why = ray._raylet.GcsClient(address=cluster.address).drain_node(
            node.node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"), "spot reclaim (test)",
            deadline_ms)
        assert accepted, why

    return drain


@pytest.fixture
def node_fault(ray_cluster, tmp_path) -> Iterator[Callable[..., NodeFault]]:
    """make(nodes, sweep name, *faults) -> a NodeFault on the session's cluster, for `with`."""
    def make(nodes: int, sweep: str, *faults: Callable) -> NodeFault:
        return NodeFault(ray_cluster, nodes, tmp_path / "storage" / sweep / "train", list(faults))

    yield make
