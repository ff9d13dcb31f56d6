"""Fault: the node hosting a trial's Ray Train worker is drained by Ray for preemption, as a spot
reclaim notice does (the GCS call of `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION
--deadline-remaining-seconds N`).

The worker sees the notice, checkpoints at once and trains no further; at the deadline Ray Train
restarts the worker group on the other node from that checkpoint, so no step is trained twice,
and the trial finishes. Its run and the sweep's report count one restart, and the run names the
drained node.
"""

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from orchestrator.cli import main
from tests.support.nodes import ONE_WORKER_ON_AN_ADDED_NODE, drain_for_preemption
from tests.support.sweep_files import sweep_runs, write_sweep

pytestmark = pytest.mark.slow

# The notice's lead: the session's cluster has Ray Train poll drains every second (tests/conftest.py), and the
# worker needs a step and a checkpoint after it sees the notice.
DEADLINE_S = 8
STEPS = 120  # more than an idle machine (about 10 steps a second) trains between the first logged step and the notice


def _trains(mlflow_server: str) -> bool:
    """The trial's run has a training step logged."""
    if MlflowClient(mlflow_server).get_experiment_by_name("preempted") is None:
        return False
    return any("train_bpd" in run.data.metrics for run in sweep_runs(mlflow_server, "preempted")[2])


def test_preempted_node_checkpoints_and_resumes_elsewhere_repeating_no_step(node_fault, mlflow_server, tmp_path):
    failure = {"train_max_failures": 0, "preemption_max_restarts": 1, "trial_max_failures": 0,
               "placement_timeout_s": 60}
    config = ONE_WORKER_ON_AN_ADDED_NODE | {"failure": failure,
                                             "train": ONE_WORKER_ON_AN_ADDED_NODE["train"] | {"steps": STEPS}}
    path = write_sweep(tmp_path, "preempted", config, mlflow_server)
    # As soon as the worker trains (it logged a step): Ray Train polls for drains every second, and the notice
    # must come before the last step; the worker's own checkpoint at the notice is what the restart resumes
    # from. Not before: a worker still starting (imports, on a loaded machine) may outlast the deadline.
    with node_fault(2, drain_for_preemption(DEADLINE_S), "preempted", when=lambda: _trains(mlflow_server)) as fault:
        assert main(["sweep", str(path)]) == 0
    assert fault.hit, "no node was drained"
    (node_id, ip), = fault.hit
    client, _, (trial,) = sweep_runs(mlflow_server, "preempted")
    assert trial.info.status == "FINISHED"
    assert trial.data.metrics["train_restarts"] == 1
    cause = trial.data.tags["ardm.restart_cause"]
    assert cause.startswith(f"node {ip} (id {node_id}) was drained for preemption"), cause
    steps = [m.step for m in client.get_metric_history(trial.info.run_id, "train_bpd")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == STEPS, "a step was trained twice, or not at all"
    assert trial.data.metrics["resumed_from_step"] in steps  # the notice's checkpoint, at a log step
    report = tmp_path / "storage" / "preempted" / "report"
    assert pq.read_table(report / "report.parquet").column("restarts").to_pylist() == [1]
