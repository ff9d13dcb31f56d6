"""Fault: the node hosting a trial's Ray Train worker goes away mid-training, two ways (one sweep, one
trial, both in turn: each sweep costs a Ray Train start):

- drained by Ray for preemption, as a spot reclaim notice does (the GCS call of `ray drain-node --reason
  DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds N`): the worker sees the notice, checkpoints
  at once and trains no further; at the deadline Ray Train restarts the worker group on another node
  from that checkpoint, so no step is trained twice;
- then removed from the cluster (`Cluster.remove_node`: its raylet and every process on it killed): Ray
  Train restarts the worker group on a third node from the trial's latest checkpoint on shared storage.

The trial finishes; its run and the sweep's report count both restarts, and the run names each node,
how it went and in which order. With no node left that fits the worker, the trial's run ends FAILED,
in bounded time (failure.placement_timeout_s), with a reason that names the lost node.
"""

import pyarrow.parquet as pq
import pytest

from orchestrator import names
from orchestrator.cli import main
from tests.support.nodes import EVERY, ONE_WORKER_ON_AN_ADDED_NODE, STEPS, drain_for_preemption, remove
from tests.support.sweep_files import sweep_runs, write_sweep

pytestmark = pytest.mark.slow

# The notice's lead: the session's cluster has Ray Train poll drains every second (tests/conftest.py), and the
# worker needs a step and a checkpoint after it sees the notice.
DEADLINE_S = 8


def _sweep(tmp_path, name: str, mlflow_server: str, failure: dict):
    return write_sweep(tmp_path, name, ONE_WORKER_ON_AN_ADDED_NODE | {"failure": failure}, mlflow_server)


def test_a_drained_then_a_lost_node_each_restart_the_worker_group_elsewhere_and_the_trial_finishes(
        node_fault, mlflow_server, tmp_path):
    path = _sweep(tmp_path, "node-faults", mlflow_server,
                  {"train_max_failures": 1, "preemption_max_restarts": 1, "trial_max_failures": 0,
                   "placement_timeout_s": 60})
    with node_fault(3, "node-faults", drain_for_preemption(DEADLINE_S), remove) as fault:
        assert main(["sweep", str(path)]) == 0
    assert len(fault.hit) == 2, f"training ended before both faults: {fault.events}"
    (drained, drained_ip), (lost, lost_ip) = fault.hit
    client, _, (trial,) = sweep_runs(mlflow_server, "node-faults")
    assert trial.info.status == "FINISHED"
    run = trial.info.run_id
    assert [(m.step, m.value) for m in client.get_metric_history(run, names.TRAIN_RESTARTS)] == [(1, 1), (2, 2)]
    first, second = (trial.data.tags[names.restart_cause_tag(n)] for n in (1, 2))
    assert first.startswith(f"node {drained_ip} (id {drained}) was drained for preemption"), first
    assert second.startswith(f"node {lost_ip} (id {lost}) was lost: rank 0's worker died"), second
    assert trial.data.tags[names.RESTART_CAUSE_TAG] == second
    notice, latest = (m.value for m in sorted(client.get_metric_history(run, names.RESUMED_FROM_STEP),
                                              key=lambda m: m.timestamp))
    steps = [m.step for m in client.get_metric_history(run, "train_bpd")]
    # The first restart took up at the notice's checkpoint (a log step): no step up to the second restart's
    # checkpoint, a regular one on storage, was trained twice.
    before_loss = [s for s in steps if s <= latest]
    assert notice in steps and sorted(before_loss) == sorted(set(before_loss)), (notice, latest, steps)
    assert latest > notice and latest % EVERY == 0, "the second restart resumed from a checkpoint, not from scratch"
    assert max(steps) == STEPS
    report = tmp_path / "storage" / "node-faults" / "report"
    assert pq.read_table(report / "report.parquet").column("restarts").to_pylist() == [2]
    assert "<th>restarts</th>" in (report / "report.html").read_text()


def test_lost_node_without_a_replacement_fails_the_trial_naming_the_node(node_fault, mlflow_server, tmp_path,
                                                                          capsys):
    path = _sweep(tmp_path, "lost-node-alone", mlflow_server,
                  {"train_max_failures": 1, "trial_max_failures": 0, "placement_timeout_s": 3,
                   "placement_retries": 0})
    with node_fault(1, "lost-node-alone", remove) as fault:
        assert main(["sweep", str(path)]) == 1
    (node_id, ip), = fault.hit
    _, _, (trial,) = sweep_runs(mlflow_server, "lost-node-alone")
    assert trial.info.status == "FAILED"
    reason = trial.data.tags["ardm.failure_reason"]
    assert reason.startswith(f"node {ip} (id {node_id}) was lost"), reason
    assert "no node could take the trial's Train workers again within 1 x 3 s" in reason
    assert f"FAILED  NodeLostError: node {ip}" in capsys.readouterr().out  # the sweep's summary names it too
