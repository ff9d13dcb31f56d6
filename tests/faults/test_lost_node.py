"""Fault: the node hosting a trial's Ray Train worker is removed from the cluster mid-training
(`Cluster.remove_node`: its raylet and every process on it killed).

With another node that fits the worker, Ray Train restarts the worker group there from the trial's
latest checkpoint on shared storage and the trial finishes; its run and the sweep's report count
one restart, and the run names the lost node. With none, the trial's run ends FAILED, in bounded
time (failure.placement_timeout_s), with a reason that names the lost node.
"""

import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main
from tests.support.nodes import EVERY, ONE_WORKER_ON_AN_ADDED_NODE, STEPS, remove
from tests.support.sweep_files import sweep_runs, write_sweep

pytestmark = pytest.mark.slow

def _sweep(tmp_path, name: str, mlflow_server: str, failure: dict):
    return write_sweep(tmp_path, name, ONE_WORKER_ON_AN_ADDED_NODE | {"failure": failure}, mlflow_server)


def test_lost_node_restarts_the_worker_group_elsewhere_and_the_report_counts_it(node_fault, mlflow_server, tmp_path):
    path = _sweep(tmp_path, "lost-node", mlflow_server,
                  {"train_max_failures": 1, "trial_max_failures": 0, "placement_timeout_s": 60})
    with node_fault(2, remove, "lost-node") as fault:
        assert main(["sweep", str(path)]) == 0
    assert fault.hit, "no node was removed: training ended before the first checkpoint"
    (node_id, ip), = fault.hit
    client, (parent,), (trial,) = sweep_runs(mlflow_server, "lost-node")
    assert trial.info.status == "FINISHED"
    assert trial.data.metrics["train_restarts"] == 1
    cause = trial.data.tags["ardm.restart_cause"]
    assert node_id in cause and ip in cause and "lost" in cause
    start = trial.data.metrics["resumed_from_step"]
    assert start >= EVERY and start % EVERY == 0, "it resumed from a checkpoint, not from scratch"
    assert max(m.step for m in client.get_metric_history(trial.info.run_id, "train_bpd")) == STEPS
    report = tmp_path / "storage" / "lost-node" / "report"
    assert pq.read_table(report / "report.parquet").column("restarts").to_pylist() == [1]
    assert "<th>restarts</th>" in (report / "report.html").read_text()


def test_lost_node_without_a_replacement_fails_the_trial_naming_the_node(node_fault, mlflow_server, tmp_path,
                                                                          capsys):
    path = _sweep(tmp_path, "lost-node-alone", mlflow_server,
                  {"train_max_failures": 1, "trial_max_failures": 0, "placement_timeout_s": 3,
                   "placement_retries": 0})
    with node_fault(1, remove, "lost-node-alone") as fault:
        assert main(["sweep", str(path)]) == 1
    (node_id, ip), = fault.hit
    _, _, (trial,) = sweep_runs(mlflow_server, "lost-node-alone")
    assert trial.info.status == "FAILED"
    reason = trial.data.tags["ardm.failure_reason"]
    assert reason.startswith(f"node {ip} (id {node_id}) was lost"), reason
    assert "no node could take the trial's Train workers again within 1 x 3 s" in reason
    assert f"FAILED  NodeLostError: node {ip}" in capsys.readouterr().out  # the sweep's summary names it too
