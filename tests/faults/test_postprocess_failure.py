"""Fault: post-processing fails after training (its storage folder cannot be created: the sweep's
`postprocess` path is a file, as a full or read-only share or a clashing name would leave it).

The README's claim: the trial's checkpoint and training metrics are kept, its run ends FAILED with a
reason that starts `post-processing:`, and the sweep says so (exit code 1) and still writes its report.
"""

from pathlib import Path

import pytest

from orchestrator import names
from orchestrator.cli import main
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

ONE_TRIAL = {
    **TINY,
    "model": {**TINY["model"], "branching": 17},
    "train": {**TINY["train"], "steps": 4, "checkpoint_every": 2},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "postprocess": {**TINY["postprocess"], "budgets": ["full"], "table_ranges": 1, "sample_grid": 0},
}


def test_a_failed_post_processing_keeps_the_trials_checkpoint_and_metrics(ray_cluster, mlflow_server, tmp_path,
                                                                          capsys):
    path = write_sweep(tmp_path, "pp-fails", ONE_TRIAL, mlflow_server)
    root = tmp_path / "storage" / "pp-fails"
    root.mkdir(parents=True)
    (root / "postprocess").write_text("not a folder")
    assert main(["sweep", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED  NotADirectoryError" in out and "report: " in out, out[-1500:]
    client, _, (run,) = sweep_runs(mlflow_server, "pp-fails")
    reason = run.data.tags[names.FAILURE_REASON_TAG]
    assert run.info.status == "FAILED" and reason.startswith("post-processing:"), reason
    assert run.data.metrics[names.TEST_BPD] > 0  # training's results were logged before post-processing
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_bpd")][-1] == 4
    checkpoint = run.data.tags[names.CHECKPOINT_TAG]
    assert (root / "train") in Path(checkpoint).parents and Path(checkpoint).is_file()
    assert "bpd_measured" not in run.data.metrics
    assert (root / "report" / "report.html").is_file()
