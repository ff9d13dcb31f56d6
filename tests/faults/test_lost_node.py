"""Fault: the node hosting a trial's Ray Train worker goes away mid-training, three times over in one
trial on three added nodes (one sweep: each costs a Ray Train start):

1. drained by Ray for preemption, as a spot reclaim notice does (the GCS call of `ray drain-node --reason
   DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds N`): the worker sees the notice, checkpoints
   at once and trains no further; at the deadline Ray Train restarts the worker group on another node
   from that checkpoint, so no step is trained twice;
2. then removed from the cluster (`Cluster.remove_node`: its raylet and every process on it killed): Ray
   Train restarts the worker group on the third node from the trial's latest checkpoint on shared storage,
   and training goes on there (a checkpoint is registered after the restart);
3. then the third node is removed too: no node is left that fits the worker, and the trial's run ends
   FAILED in bounded time (failure.placement_timeout_s), with a reason that names that node.

The run and the sweep's report count every restart, and the run names each node, how it went and in
which order. (A trial restarted by Ray Train finishing with the weights of an undisturbed one:
tests/faults/test_worker_death.py.)
"""

import pyarrow.parquet as pq
import pytest

from orchestrator import names
from orchestrator.cli import main
from tests.support.nodes import EVERY, ONE_WORKER_ON_AN_ADDED_NODE, drain_for_preemption, remove
from tests.support.sweep_files import sweep_runs, write_sweep

pytestmark = pytest.mark.slow

# The notice's lead: the session's cluster has Ray Train poll drains every second (tests/conftest.py), and the
# worker needs a step and a checkpoint after it sees the notice.
DEADLINE_S = 8
# How long Ray Train waits for a node to take a restarted group, once: a free node takes it in well under a
# second; with none left, the trial fails after this.
PLACEMENT_TIMEOUT_S = 5


def test_lost_nodes_restart_the_worker_group_elsewhere_until_none_is_left_and_the_trial_fails_naming_it(
        node_fault, mlflow_server, tmp_path, capsys):
    path = write_sweep(tmp_path, "node-faults", ONE_WORKER_ON_AN_ADDED_NODE | {"failure": {
        "train_max_failures": 2, "preemption_max_restarts": 1, "trial_max_failures": 0,
        "placement_timeout_s": PLACEMENT_TIMEOUT_S, "placement_retries": 0}}, mlflow_server)
    with node_fault(3, "node-faults", drain_for_preemption(DEADLINE_S), remove, remove) as fault:
        assert main(["sweep", str(path)]) == 1
    assert len(fault.hit) == 3, f"training ended before the three faults: {fault.events}"
    (drained, drained_ip), (lost, lost_ip), (last, last_ip) = fault.hit
    client, _, (trial,) = sweep_runs(mlflow_server, "node-faults")
    run = trial.info.run_id
    # Every restart is counted and its cause named, in order; the last found no node.
    assert [(m.step, m.value) for m in client.get_metric_history(run, names.TRAIN_RESTARTS)] == [(1, 1), (2, 2), (3, 3)]
    causes = [trial.data.tags[names.restart_cause_tag(n)] for n in (1, 2, 3)]
    assert causes[0].startswith(f"node {drained_ip} (id {drained}) was drained for preemption"), causes
    assert causes[1].startswith(f"node {lost_ip} (id {lost}) was lost: rank 0's worker died"), causes
    assert causes[2].startswith(f"node {last_ip} (id {last}) was lost: rank 0's worker died"), causes
    assert trial.data.tags[names.RESTART_CAUSE_TAG] == causes[2]
    # The two restarts that found a node resumed: the first at the notice's checkpoint (a log step), the second
    # from a regular checkpoint on storage; no step up to the second resume point was trained twice.
    notice, latest = (m.value for m in sorted(client.get_metric_history(run, names.RESUMED_FROM_STEP),
                                              key=lambda m: m.timestamp))
    steps = [m.step for m in client.get_metric_history(run, "train_bpd")]
    before_loss = [s for s in steps if s <= latest]
    assert notice in steps and sorted(before_loss) == sorted(set(before_loss)), (notice, latest, steps)
    assert latest > notice and latest % EVERY == 0, "the second restart resumed from a checkpoint, not from scratch"
    assert max(steps) > latest, "no training on the third node"
    # With no node left, the trial failed in bounded time, naming the last node lost.
    assert trial.info.status == "FAILED"
    reason = trial.data.tags[names.FAILURE_REASON_TAG]
    assert reason.startswith(causes[2]), reason
    assert f"no node could take the trial's Train workers again within 1 x {PLACEMENT_TIMEOUT_S} s" in reason
    assert f"FAILED  NodeLostError: node {last_ip}" in capsys.readouterr().out  # the sweep's summary names it too
    report = tmp_path / "storage" / "node-faults" / "report"
    assert pq.read_table(report / "report.parquet").column("restarts").to_pylist() == [3]
    assert "<th>restarts</th>" in (report / "report.html").read_text()
