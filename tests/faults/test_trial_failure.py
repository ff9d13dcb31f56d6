"""Fault: a trial whose configuration always fails (a network too large to allocate: a real
out-of-memory error, raised when the worker builds the model).

Tune retries it per failure.trial_max_failures, then it is marked FAILED in MLflow with the
reason; the sweep's other trial finishes, and the report shows the failed trial as a row.
"""

import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main

from sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

ONE_FAILS = {
    **TINY,
    # 2**20 channels: every 3x3 conv would hold 2**40 * 9 floats (36 TiB). The allocation fails at once.
    "model": {"preset": "cpu-tiny", "branching": 17, "network": {"channels": {"grid": [32, 2**20]}}},
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
    failed, fine = by_width[str(2**20)], by_width["32"]
    assert failed.info.status == "FAILED" and "allocate" in failed.data.tags["ardm.failure_reason"]
    attempts = [m.step for m in client.get_metric_history(failed.info.run_id, "trial_attempt")]
    assert attempts == [1, 2], "one try and trial_max_failures = 1 retry"
    assert fine.info.status == "FINISHED" and fine.data.metrics["bpd_budget_3_measured"] > 0
    assert parents[0].info.status == "FAILED" and parents[0].data.metrics["trials_failed"] == 1
    assert "1 of 2 trials failed" in parents[0].data.tags["ardm.failure_reason"]
    rows = {r["run_id"]: r for r in pq.read_table(tmp_path / "storage" / "one-fails" / "report" /
                                                  "report.parquet").to_pylist()}
    assert rows[failed.info.run_id]["status"] == "failed" and "allocate" in rows[failed.info.run_id]["reason"]
    assert rows[failed.info.run_id]["bpd_budget_3"] is None
    assert rows[fine.info.run_id]["bpd_budget_3"] == fine.data.metrics["bpd_budget_3_measured"]
    html = (tmp_path / "storage" / "one-fails" / "report" / "report.html").read_text()
    assert '<tr class="failed">' in html
