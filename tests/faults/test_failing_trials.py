"""Faults inside a sweep's trials, caused for real in one sweep of two trials (one sweep, not one per
fault: each costs a Ray Train start):

- a NaN loss: the learning rate 1e20 overflows the weights on the first update, so every attempt
  fails at step 2 with NonFiniteLossError. Tune retries the trial (failure.trial_max_failures = 1),
  then its run ends FAILED with the step and the reason, and the last good checkpoint (step 1) on
  the sweep's storage loads;
- post-processing failing after training: the sweep's `postprocess` path is a file (as a full or
  read-only share or a clashing name would leave it), so the other trial, which trains fine, keeps
  its checkpoint and training metrics and its run ends FAILED with `post-processing: ...`.

The sweep exits 1, says which trials failed and why, and still writes its report, with both rows
marked failed.
"""

import contextlib
import io
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from ardm.checkpoint import load_checkpoint
from orchestrator import names
from orchestrator.cli import main
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

FINE_LR, NAN_LR = 0.002, 1e20
STEPS = 4
TWO_TRIALS = {
    **TINY,
    "model": {**TINY["model"], "branching": 4},
    "train": {**TINY["train"], "steps": STEPS, "checkpoint_every": 1, "log_every": 1,
              "learning_rate": {"grid": [FINE_LR, NAN_LR]}},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "failure": {"train_max_failures": 0, "trial_max_failures": 1},
    "postprocess": {**TINY["postprocess"], "budgets": ["full"], "table_ranges": 1, "sample_grid": 0},
}


@pytest.fixture(scope="module")
def failed_sweep(ray_cluster, mlflow_server, tmp_path_factory):
    """(exit code, console, MLflow client, parent run, {learning rate: trial run}, sweep storage folder)."""
    tmp_path = tmp_path_factory.mktemp("failing-trials")
    path = write_sweep(tmp_path, "failing-trials", TWO_TRIALS, mlflow_server)
    root = tmp_path / "storage" / "failing-trials"
    root.mkdir(parents=True)
    (root / "postprocess").write_text("not a folder")
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        code = main(["sweep", str(path)])
    client, (parent,), trials = sweep_runs(mlflow_server, "failing-trials")
    by_lr = {float(r.data.params["train.learning_rate"]): r for r in trials}
    return code, console.getvalue(), client, parent, by_lr, root


def _finite(payload: dict) -> bool:
    tensors = [*payload["model"].values(), *payload["ema"].values()]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def test_the_sweep_fails_and_still_reports_both_failed_trials(failed_sweep) -> None:
    code, console, _, parent, by_lr, root = failed_sweep
    assert code == 1
    summary = console[console.rindex("sweep 'failing-trials'"):]
    assert "FAILED  NonFiniteLossError" in summary and "FAILED  NotADirectoryError" in summary, summary
    assert f"report: {root / 'report' / 'report.html'}" in summary
    assert parent.info.status == "FAILED" and parent.data.metrics[names.TRIALS_FAILED] == 2
    assert "2 of 2 trials failed" in parent.data.tags[names.FAILURE_REASON_TAG]
    rows = {r["run_id"]: r for r in pq.read_table(root / "report" / "report.parquet").to_pylist()}
    for lr, cause in ((NAN_LR, "NonFiniteLossError"), (FINE_LR, "post-processing:")):
        row = rows[by_lr[lr].info.run_id]
        assert row["status"] == "failed" and cause in row["reason"], row
    assert (root / "report" / "report.html").read_text().count('<tr class="failed">') == 2


def test_a_non_finite_loss_is_retried_then_fails_its_run_and_keeps_the_last_checkpoint(failed_sweep) -> None:
    _, _, client, _, by_lr, root = failed_sweep
    run = by_lr[NAN_LR]
    reason = run.data.tags[names.FAILURE_REASON_TAG]
    found = re.fullmatch(r"NonFiniteLossError: non-finite training loss at step (\d+) \(loss=\S+, grad_norm=\S+\); "
                         r"last good checkpoint: (.+)", reason)
    assert run.info.status == "FAILED" and found and int(found[1]) == 2, reason
    attempts = [m.step for m in client.get_metric_history(run.info.run_id, names.TRIAL_ATTEMPT)]
    assert attempts == [1, 2], "one try and trial_max_failures = 1 retry"
    # Each attempt trained step 1 (the retry from the checkpoint before the failing step), and no later step.
    assert {m.step for m in client.get_metric_history(run.info.run_id, "train_bpd")} == {1}
    kept = root / "train" / run.data.tags[names.TRIAL_TAG] / "latest" / "checkpoint.pt"
    payload = load_checkpoint(kept)
    assert payload["step"] == 1 and _finite(payload)
    # The reason names that checkpoint on the sweep's storage, not the worker's scratch copy (deleted).
    named = Path(found[2])
    assert named.is_file() and named.samefile(kept), reason


def test_a_failed_post_processing_keeps_the_trials_checkpoint_and_metrics(failed_sweep) -> None:
    _, _, client, _, by_lr, root = failed_sweep
    run = by_lr[FINE_LR]
    reason = run.data.tags[names.FAILURE_REASON_TAG]
    assert run.info.status == "FAILED" and reason.startswith("post-processing: NotADirectoryError"), reason
    assert run.data.metrics[names.TEST_BPD] > 0  # training's results were logged before post-processing
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_bpd")][-1] == STEPS
    checkpoint = Path(run.data.tags[names.CHECKPOINT_TAG])
    assert root / "train" in checkpoint.parents and load_checkpoint(checkpoint)["step"] == STEPS
    assert "bpd_measured" not in run.data.metrics
