"""`ardm runs`: the experiments of a store, and the trials of one with status, test bpd and checkpoint."""

from orchestrator.cli import main
from orchestrator.listing import experiment_rows, format_rows, trial_rows
from orchestrator.names import CHECKPOINT_TAG
from orchestrator.tracking import SweepTracker, default_tracking_uri


def _store(tmp_path):
    uri = default_tracking_uri(tmp_path)
    tracker = SweepTracker(uri, "listed")
    parent = tracker.start_sweep("listed", {"sweep": {"name": "listed"}})
    done = tracker.trial_run(parent, "branching=4_a", {"seed": 0})
    tracker.log_metrics(done, {"test_bpd": 4.25, "test_bpd_stderr": 0.05})
    tracker.set_tags(done, {CHECKPOINT_TAG: "/runs/listed/train/branching=4_a/checkpoint_1/checkpoint.pt"})
    tracker.end_run(done)
    failed = tracker.trial_run(parent, "branching=2_b", {"seed": 1})
    tracker.end_run(failed, "FAILED", reason="boom")
    SweepTracker(uri, "empty")
    return uri, tracker, done


def test_rows_and_table(tmp_path):
    uri, tracker, done = _store(tmp_path)
    experiments = {r["experiment"]: r["sweeps"] for r in experiment_rows(uri)}
    assert experiments["listed"] == 1 and experiments["empty"] == 0
    rows = {r["trial"]: r for r in trial_rows(tracker)}
    assert rows["branching=4_a"]["test_bpd"] == 4.25 and rows["branching=4_a"]["run_id"] == done
    assert rows["branching=4_a"]["checkpoint"].endswith("checkpoint_1/checkpoint.pt")
    assert rows["branching=2_b"]["status"] == "FAILED" and rows["branching=2_b"]["test_bpd"] is None
    text = format_rows(list(rows.values()), ["trial", "status", "test_bpd"])
    assert text.splitlines()[0].split() == ["trial", "status", "test_bpd"] and "4.2500" in text and "—" in text


def test_runs_command(tmp_path, capsys):
    uri, _, done = _store(tmp_path)
    assert main(["runs", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "listed" in out and "empty" in out
    assert main(["runs", "listed", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert done in out and "4.2500 ± 0.0500" in out and "FAILED" in out
    assert main(["runs", "lsited", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "no experiment named 'lsited'" in err and "listed" in err and len(err.strip().splitlines()) == 1
