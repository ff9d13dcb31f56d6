"""Worker-group restarts of a trial, into its MLflow run: how many, and why, naming the node lost.

Ray Train's controller restarts a trial's worker group from its latest checkpoint when a worker
fails (a process killed, a node lost) or a node hosting a worker is drained for preemption. The
controller runs this callback in its own process: at each restart it logs the trial's running
count (names.TRAIN_RESTARTS) and the cause as one line naming the node, IP and id (the N-th
restart's in names.restart_cause_tag(N), the latest in names.RESTART_CAUSE_TAG too). When no node
takes the group again, the trial's failure reason starts from that cause
(`failure_reason_after_restart`, raised as NodeLostError), not from Ray's placement timeout.
"""

from __future__ import annotations

import pickle
import warnings
from typing import TYPE_CHECKING

import ray
from ray.exceptions import RayActorError
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback
from ray.train.v2._internal.execution.controller.state import RestartingState
from ray.train.v2.api.exceptions import ControllerError, PreemptionError, WorkerGroupError

from orchestrator.messages import describe

if TYPE_CHECKING:  # at run time only where a restart is logged: see RestartLog
    from orchestrator.config import FailureSection
    from orchestrator.tracking import SweepTracker


class RestartLog(ControllerCallback, WorkerGroupCallback):
    """Logs each restart of one trial's worker group to the trial's run `run_id`.

    Ray Train's public UserCallback sees worker errors only, not a preemption; its controller and
    worker-group callbacks (developer API, passed through RunConfig.callbacks) see every restart and
    where each rank ran. Tracking never stops training: a failed log call is a warning.

    The controller's process unpickles this callback when every trial starts, and most trials never
    restart: the tracker travels pickled inside it and the tracking modules (MLflow, torch: seconds of
    CPU per process) are imported at the first restart, not at the trial's start.
    """

    def __init__(self, tracker: SweepTracker, run_id: str) -> None:
        self._tracker, self.run_id = pickle.dumps(tracker), run_id
        self.nodes: dict[int, tuple[str, str]] = {}  # world rank -> (node id, node IP) of the running group
        self.restarts: int | None = None  # this trial's restarts so far (earlier Tune attempts included)

    def after_worker_group_start(self, worker_group) -> None:
        self.nodes = {w.distributed_context.world_rank: (w.metadata.node_id, w.metadata.node_ip)
                      for w in worker_group.get_workers()}

    def after_controller_state_update(self, previous_state, current_state) -> None:
        if not isinstance(current_state, RestartingState):
            return
        from orchestrator import names

        cause = restart_cause(current_state.training_failed_error, self.nodes)
        try:
            tracker: SweepTracker = pickle.loads(self._tracker)
            if self.restarts is None:  # a retried trial goes on counting where its earlier attempt stopped
                logged = tracker.run_now(self.run_id)
                # MLflow down: this attempt's restarts are counted (and kept in the outbox until it is back)
                self.restarts = int(logged.data.metrics.get(names.TRAIN_RESTARTS, 0)) if logged else 0
            self.restarts += 1
            tracker.log_metrics(self.run_id, {names.TRAIN_RESTARTS: self.restarts}, step=self.restarts)
            tracker.set_tags(self.run_id, {names.restart_cause_tag(self.restarts): cause,
                                           names.RESTART_CAUSE_TAG: cause})
        except Exception as err:
            warnings.warn(f"run {self.run_id}: restart not logged to MLflow ({describe(err)}): {cause}",
                          stacklevel=1)


def restart_cause(err: BaseException, nodes: dict[int, tuple[str, str]]) -> str:
    """One line: the node a restart lost, by IP and id, and how (lost, or drained for preemption).

    nodes: world rank -> (node id, node IP) of the group that failed. An error that names no node
    (a worker's own exception) is described as it is.
    """
    if isinstance(err, PreemptionError):
        info = err.preemption_info
        lost = [(node, _ip(node, nodes)) for node in info.preempted_node_ids]
        return "; ".join(f"node {ip} (id {node}) was drained for preemption (ranks "
                         f"{info.preempted_node_to_ranks[node]})" for node, ip in lost)
    if isinstance(err, WorkerGroupError) and err.worker_failures:
        dead = sorted(rank for rank, e in err.worker_failures.items() if _actor_died(e) and rank in nodes)
        if not dead:
            return describe(err.worker_failures[min(err.worker_failures)])
        alive = _alive_nodes()
        lost = sorted({nodes[rank] for rank in dead if nodes[rank][0] not in alive})
        rank = dead[0]
        error = describe(err.worker_failures[rank])
        if lost:
            return "; ".join(f"node {ip} (id {node}) was lost" for node, ip in lost) + \
                f": rank {rank}'s worker died ({error})"
        node, ip = nodes[rank]
        return f"rank {rank}'s worker on node {ip} (id {node}) died ({error})"
    return describe(err)


class NodeLostError(RuntimeError):
    """A trial's worker group lost a node and could not be started again: the message names the node."""


def failure_reason_after_restart(err: BaseException, tracker: SweepTracker, run_id: str, reason: str,
                                 failure: FailureSection) -> str:
    """The trial's failure reason. When Ray Train gave up starting a restarted group (a controller
    error), the restart's cause logged to the run (which node was lost) comes first, then why;
    else `reason` as it is. Ray's own message would name its timeout, not the node."""
    from orchestrator import names

    if not isinstance(err, ControllerError):
        return reason
    logged = tracker.run_now(run_id)  # None with the tracking server away: the plain reason still says what happened
    cause = logged.data.tags.get(names.RESTART_CAUSE_TAG) if logged else None
    if not cause:
        return reason
    if isinstance(err.controller_failure, WorkerGroupStartupTimeoutError):
        return (f"{cause}, and no node could take the trial's Train workers again within "
                f"{failure.placement_retries + 1} x {failure.placement_timeout_s:g} s "
                "(failure.placement_retries, failure.placement_timeout_s)")
    return f"{cause}, and the trial's Train workers could not be started again ({reason})"


def _actor_died(err: BaseException) -> bool:
    """Whether a worker's error is its actor's death (Ray wraps it in a failed health check)."""
    return isinstance(getattr(err, "health_check_failure", err), RayActorError)


def _alive_nodes() -> set[str]:
    """The ids of the cluster's live nodes."""
    return {n["NodeID"] for n in ray.nodes() if n.get("Alive")}


def _ip(node_id: str, nodes: dict[int, tuple[str, str]]) -> str:
    """The IP of a node of the group (or of the cluster), "?" if Ray no longer knows it."""
    known = {node: ip for node, ip in nodes.values()}
    if node_id in known:
        return known[node_id]
    return next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id), "?")
