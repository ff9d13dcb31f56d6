"""Fault: a trial whose configuration always fails (a network too large to build: a real error,
raised when the worker builds the model, on every attempt).

Tune retries it per failure.trial_max_failures, then it is marked FAILED in MLflow with the
reason; the sweep's other trial finishes, and the report shows the failed trial as a row.
"""

import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

HUGE = 2**62
ONE_FAILS = {
    **TINY,
    # 2**62 channels: the first weight sized by the width (at least 2**61 floats) has a size in bytes that
    # overflows 64 bits, so torch refuses it before allocating anything, on any host. (A size that merely
    # exceeds the memory depends on the host: under overcommit the allocation succeeds, then the OOM killer
    # ends the worker instead of an error.)
    "model": {"preset": "cpu-tiny", "branching": 17, "network": {"channels": {"grid": [32, HUGE]}}},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "failure": {"train_max_failures": 0, "trial_max_failures": 1},
    "postprocess": {**TINY["postprocess"], "budgets": [3, "full"]},
}


def test_failing_trial_is_retried_then_marked_failed_and_reported(ray_cluster, mlflow_server, tmp_path, capsys):
    path = write_sweep(tmp_path, "one-fails", ONE_FAILS, mlflow_server)
    assert main(["sweep", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "report: " in out
    client, parents, trials = sweep_runs(mlflow_server, "one-fails")
    by_width = {r.data.params["model.network.channels"]: r for r in trials}
    failed, fine = by_width[str(HUGE)], by_width["32"]
    reason = failed.data.tags["ardm.failure_reason"]
    assert failed.info.status == "FAILED" and "overflowed" in reason and str(HUGE) in reason, reason
    attempts = [m.step for m in client.get_metric_history(failed.info.run_id, "trial_attempt")]
    assert attempts == [1, 2], "one try and trial_max_failures = 1 retry"
    measured = {m.step: m.value for m in client.get_metric_history(fine.info.run_id, "bpd_measured")}
    assert fine.info.status == "FINISHED" and measured[3] > 0
    assert parents[0].info.status == "FAILED" and parents[0].data.metrics["trials_failed"] == 1
    assert "1 of 2 trials failed" in parents[0].data.tags["ardm.failure_reason"]
    rows = {r["run_id"]: r for r in pq.read_table(tmp_path / "storage" / "one-fails" / "report" /
                                                  "report.parquet").to_pylist()}
    assert rows[failed.info.run_id]["status"] == "failed" and "overflowed" in rows[failed.info.run_id]["reason"]
    assert rows[failed.info.run_id]["bpd_budget_3"] is None
    assert rows[fine.info.run_id]["bpd_budget_3"] == measured[3]
    html = (tmp_path / "storage" / "one-fails" / "report" / "report.html").read_text()
    assert '<tr class="failed">' in html
