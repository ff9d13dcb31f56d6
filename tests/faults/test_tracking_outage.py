"""Fault: the MLflow tracking server dies mid-run (a real `mlflow server`, SIGKILLed) and comes back.

Training must not notice: tracking calls return at once and wait in the sweep's outbox, with one
warning, and reach the server with their original steps and timestamps when it is back (delivered
by the tracker itself, or by `ardm sync` when the run's processes ended before the server returned).
The server at start being unreachable is the other half of this fault: tests/orchestrator/test_sweep.py.
A sweep's trials train through an outage, and a worker killed in it, in tests/faults/test_worker_death.py.

Nothing here is timed or slept: "returns at once" is checked as what makes it true (during an outage
a call makes at most one fail-fast request, 1 + FAIL_FAST_RETRIES connection attempts each with
FAIL_FAST_TIMEOUT_S, and none within the retry interval), and the tracker's clock for its retry
interval is moved by hand. The timings are in bench/tracking_check.py.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import warnings
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

import orchestrator.tracking.tracker
from ardm.config import build
from orchestrator.config import SweepConfig
from orchestrator.layout import sweep_outbox
from orchestrator.names import FAILURE_REASON_TAG
from orchestrator.tracking import SweepTracker
from orchestrator.tracking.outbox import FAIL_FAST_RETRIES, FAIL_FAST_TIMEOUT_S, Outbox
from orchestrator.tracking.sync import run_sync
from orchestrator.worker import _MetricsToMlflow
from tests.support.connections import connection_attempts
from tests.support.mlflow_server import MlflowServer

# What a call that tries the dead server costs: one request, retried FAIL_FAST_RETRIES times (MLflow alone would
# retry 7 times with backoff, for minutes).
FAIL_FAST_ATTEMPTS = 1 + FAIL_FAST_RETRIES
# The first call after the kill may spend its first attempt on a pooled keep-alive connection (no new
# connection to count); the failure drops the pool, so later tries open every connection anew.
FIRST_TRY = (FAIL_FAST_ATTEMPTS - 1, FAIL_FAST_ATTEMPTS)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Clock:
    """The trackers' time.monotonic (their retry interval), moved only by `advance`."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Stands still unless the test moves it; timestamps (time.time) stay real."""
    clock = Clock()
    monkeypatch.setattr(orchestrator.tracking.tracker, "time", SimpleNamespace(time=time.time, monotonic=clock))
    return clock


@pytest.mark.mlflow  # the fault tests' own `mlflow server` (the `server` fixture)
def test_outage_mid_run_keeps_calls_and_delivers_them_when_the_server_returns(
    up: MlflowServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, clock: Clock,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "outbox"
    tracker = SweepTracker(up.uri, "outage", outbox=outbox, retry_interval=0.5)
    run = tracker.trial_run(tracker.start_sweep("sweep-outage", {}), "trial_0", {})
    tracker.log_metrics(run, {"loss": 1.0}, step=0)

    up.kill()
    killed_at = _now_ms()
    attempts = connection_attempts(monkeypatch, up.port)
    tried = []  # connection attempts of each call
    with caplog.at_level(logging.WARNING, logger="orchestrator.tracking"):
        for step in range(1, 6):
            before = len(attempts)
            tracker.log_metrics(run, {"loss": 1.0 / (step + 1)}, step=step)
            tried.append(len(attempts) - before)
            clock.advance(0.2)  # some calls fall in the retry interval, some try the dead server again
        # At 0.0 s and 0.6 s the server is tried (and fails fast); at 0.2, 0.4 and 0.8 s it is not.
        assert tried[1:] == [0, 0, FAIL_FAST_ATTEMPTS, 0] and tried[0] in FIRST_TRY
        assert {a.timeout for a in attempts} == {FAIL_FAST_TIMEOUT_S}
        tracker.set_tags(run, {"ardm.note": "kept"})
        assert not tracker.flush()  # what the sweep does at its end: the calls stay kept
        # A read made while training goes on (a restart's count) fails fast too: the server cannot say.
        before = len(attempts)
        assert tracker.run_now(run) is None and len(attempts) - before == FAIL_FAST_ATTEMPTS
    # One warning per outage (urllib3 also logs its retry of the refused connection, which no handler shows).
    [warning] = [r for r in caplog.records if r.name == "orchestrator.tracking" and r.levelno >= logging.WARNING]
    message = warning.getMessage()
    assert message.startswith(f"{up.uri}: tracking server unreachable (ConnectionRefusedError") and "\n" not in message
    assert f"kept in {outbox}" in message and f"ardm sync --outbox {outbox}" in message
    assert Outbox(outbox).runs() == [run]

    up.start()
    restarted_at = _now_ms()
    clock.advance(tracker.retry_interval)  # the tracker tries the server again on its next call
    tracker.log_metrics(run, {"loss": 0.1}, step=6)
    assert Outbox(outbox).runs() == []  # delivered, the file removed

    client = mlflow.MlflowClient(up.uri)
    history = sorted(client.get_metric_history(run, "loss"), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(7))
    assert [m.value for m in history] == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6, 0.1])
    # The kept values carry the time they were logged at, not the time they were delivered.
    assert all(killed_at <= m.timestamp < restarted_at for m in history[1:6])
    assert client.get_run(run).data.tags["ardm.note"] == "kept"
    assert tracker.run_now(run).data.tags["ardm.note"] == "kept"


@pytest.mark.mlflow  # the fault tests' own `mlflow server` (the `server` fixture)
def test_ardm_sync_delivers_what_the_workers_kept_when_the_server_did_not_return(
    up: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outbox = tmp_path / "outbox"
    tracker = SweepTracker(up.uri, "outage", outbox=outbox)
    run = tracker.trial_run(tracker.start_sweep("sweep-sync", {}), "trial_0", {})
    to_mlflow = _MetricsToMlflow(pickle.loads(pickle.dumps(tracker)), run)  # rank 0's copy, as Ray ships it
    to_mlflow({"train_bpd": 3.0}, 0)

    up.kill()
    attempts = connection_attempts(monkeypatch, up.port)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the worker must keep its metrics, not warn and drop them
        tried = []
        for step in range(1, 4):
            before = len(attempts)
            to_mlflow({"train_bpd": 3.0 - step / 10, "grad_norm": float(step)}, step)
            tried.append(len(attempts) - before)
        # The clock stands still: only the first call tries the server, the others are within the retry interval.
        assert tried[1:] == [0, 0] and tried[0] in FIRST_TRY
        assert {a.timeout for a in attempts} == {FAIL_FAST_TIMEOUT_S}
    assert not to_mlflow.warned
    checkpoint = tmp_path / "scratch" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    tracker.log_artifact(run, checkpoint, "checkpoint")
    checkpoint.unlink()  # it was the trial's temporary copy: the outbox must hold its own
    tracker.end_run(run, "FINISHED")
    del to_mlflow, tracker  # the trial's processes end with the server still down

    args = Namespace(outbox=[str(outbox)], tracking_uri=None)
    assert run_sync(args) == 1  # still down: nothing delivered, nothing lost
    assert f"{up.uri}: tracking server unreachable" in capsys.readouterr().err
    assert Outbox(outbox).runs() == [run]

    up.start()
    assert run_sync(args) == 0
    out = capsys.readouterr().out
    assert f"run {run} -> {up.uri}: 6 metric value(s), 0 tag(s), 1 artifact(s), ended FINISHED" in out
    assert not list(outbox.glob("*.jsonl")) and not (outbox / "artifacts" / run).exists()

    client = mlflow.MlflowClient(up.uri)
    finished = client.get_run(run)
    assert finished.info.status == "FINISHED" and finished.info.end_time
    bpd = sorted(client.get_metric_history(run, "train_bpd"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in bpd] == [(0, 3.0), (1, 2.9), (2, 2.8), (3, 2.7)]
    assert [m.step for m in client.get_metric_history(run, "grad_norm")] == [1, 2, 3]
    local = client.download_artifacts(run, "checkpoint/checkpoint.pt", str(tmp_path / "download"))
    assert Path(local).read_bytes() == b"weights"
    assert run_sync(args) == 0 and "nothing to deliver" in capsys.readouterr().out


@pytest.mark.mlflow  # the fault tests' own `mlflow server` (the `server` fixture)
def test_refused_calls_are_set_aside_and_an_unknown_run_stays(
    up: MlflowServer, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A kept call that the server refuses must not block the others; a run it does not know stays kept."""
    outbox = Outbox(tmp_path / "outbox")
    tracker = SweepTracker(up.uri, "outage")
    run = tracker.trial_run(tracker.start_sweep("sweep-refused", {}), "trial_0", {})
    good = {"op": "metrics", "metrics": [["loss", 1.0, _now_ms(), 0]]}
    outbox.keep(up.uri, run, good)
    outbox.keep(up.uri, run, {"op": "metrics", "metrics": [["loss?", 2.0, _now_ms(), 1]]})  # a name MLflow refuses
    outbox.keep(up.uri, run, {"op": "tags", "tags": {"ardm.note": "after"}})
    outbox.keep(up.uri, run, {"op": "end", "status": "FINISHED", "end_time": _now_ms()})
    unknown = "0" * 32
    outbox.keep(up.uri, unknown, good)

    assert run_sync(Namespace(outbox=[str(outbox.folder)], tracking_uri=None)) == 1
    captured = capsys.readouterr()
    assert f"run {unknown} not found" in captured.err and outbox.runs() == [unknown]
    assert f"run {run} -> {up.uri}: 1 metric value(s), 1 tag(s), 0 artifact(s), ended FINISHED, 1 call(s) refused" in (
        captured.out
    )
    [refused] = [json.loads(line) for line in (outbox.folder / f"{run}.refused.jsonl").read_text().splitlines()]
    assert refused["metrics"][0][0] == "loss?" and "Invalid value" in refused["error"]
    finished = mlflow.MlflowClient(up.uri).get_run(run)
    assert finished.info.status == "FINISHED" and finished.data.metrics == {"loss": 1.0}


@pytest.mark.mlflow  # the fault tests' own `mlflow server` (the `server` fixture)
def test_a_retried_trial_gets_its_kept_calls_before_it_is_reopened(up: MlflowServer, tmp_path: Path) -> None:
    """The end status kept from a failed attempt lands before the retry reopens the run, not after it."""
    tracker = SweepTracker(up.uri, "outage", outbox=tmp_path / "outbox")
    parent = tracker.start_sweep("sweep-retry", {})
    run = tracker.trial_run(parent, "trial_0", {})
    tracker.outbox.keep(up.uri, run, {"op": "metrics", "metrics": [["loss", 2.0, _now_ms(), 5]]})
    tracker.outbox.keep(up.uri, run, {"op": "tags", "tags": {FAILURE_REASON_TAG: "node lost"}})
    tracker.outbox.keep(up.uri, run, {"op": "end", "status": "FAILED", "end_time": _now_ms()})

    assert tracker.trial_run(parent, "trial_0", {}) == run
    reopened = mlflow.MlflowClient(up.uri).get_run(run)
    assert reopened.info.status == "RUNNING" and FAILURE_REASON_TAG not in reopened.data.tags
    assert reopened.data.metrics == {"loss": 2.0} and tracker.outbox.runs() == []


def test_sweep_outbox_is_in_local_storage_or_local_for_object_stores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = {"sweep": {"name": "demo"}, "data": {"spec": "digits"}}
    local = build(SweepConfig, {**base, "storage": {"path": "/nfs/sweeps"}})
    assert sweep_outbox(local) == "/nfs/sweeps/demo/tracking-outbox"
    s3 = build(SweepConfig, {**base, "storage": {"path": "s3://bucket/sweeps"}})
    assert sweep_outbox(s3) == f"{tmp_path}/runs/sweeps/demo/tracking-outbox"  # where `ardm sync` looks by default
