"""The MLflow tracking layer against a real `mlflow server` (REST store, artifact proxy) and SQLite."""

from __future__ import annotations

import json
import logging
import pickle
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from ardm.data import convert_dataset, load_dataset
from ardm.data.parquet import split_record
from orchestrator.cli import main
from orchestrator.names import EXPERIMENT_KIND_TAG, FAILURE_REASON_TAG, MODEL_TRAINING_KIND
from orchestrator.tracking import (
    Outbox,
    SweepTracker,
    TrackingError,
    check_tracking,
    default_tracking_uri,
    flatten,
    redact,
    resolve_tracking_uri,
    system_metrics,
)
from orchestrator.tracking.sync import sync_outbox
from orchestrator.tracking.tracker import MAX_REASON_LENGTH
from tests.support.connections import connection_attempts

CONFIG = {
    "data": "digits",
    "model": {"branching": 4, "network": {"channels": [32, 64]}},
    "train": {"learning_rate": 1e-4},
}


@pytest.fixture(scope="module")
def tracker(mlflow_server: str) -> SweepTracker:
    return SweepTracker(mlflow_server, "tracking-tests")


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite database for the module: creating one runs MLflow's migrations (seconds)."""
    return default_tracking_uri(tmp_path_factory.mktemp("sqlite"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_default_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert default_tracking_uri(str(tmp_path)).startswith("sqlite:////")  # absolute: four slashes
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri() == default_tracking_uri(tmp_path)


def test_resolve_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit URI, else MLFLOW_TRACKING_URI, else the SQLite file in the working directory."""
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == resolve_tracking_uri("") == default_tracking_uri(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://head:5000")
    assert resolve_tracking_uri() == resolve_tracking_uri(None) == "http://head:5000"
    assert resolve_tracking_uri("http://other:5000") == "http://other:5000"


def test_flatten() -> None:
    flat = flatten({**CONFIG, "eval": {}, "flags": (True, None), "note": "x" * (MAX_PARAM_VAL_LENGTH + 10)})
    assert flat["data"] == "digits"
    assert flat["model.branching"] == "4"
    assert json.loads(flat["model.network.channels"]) == [32, 64]
    assert flat["train.learning_rate"] == "0.0001"
    assert flat["eval"] == "{}"
    assert json.loads(flat["flags"]) == [True, None]
    assert len(flat["note"]) == MAX_PARAM_VAL_LENGTH and flat["note"].endswith("[truncated]")
    assert all(isinstance(v, str) for v in flat.values())
    assert flatten({"a": 1}, prefix="base.") == {"base.a": "1"}


def test_redact_takes_passwords_out_of_uris() -> None:
    assert redact("http://ardm:s3cr%40t@host:5000/x") == "http://ardm:***@host:5000/x"
    assert redact("postgresql://u:pw@db/mlflow?sslmode=require&password=pw") == \
        "postgresql://u:***@db/mlflow?sslmode=require&password=***"
    assert redact("see https://h/a?X-Amz-Signature=abc&n=1: x") == "see https://h/a?X-Amz-Signature=***&n=1: x"
    for plain in ("http://127.0.0.1:5000", "sqlite:///a/b.db", "s3://bucket/sweeps", "digits", "a:b@c"):
        assert redact(plain) == plain


def test_flatten_redacts_uri_passwords() -> None:
    flat = flatten({"tracking": {"uri": "https://u:pw@mlflow:5000"}, "storage": {"path": "s3://KEY:SECRET@bucket/x"}})
    assert flat == {"tracking.uri": "https://u:***@mlflow:5000", "storage.path": "s3://KEY:***@bucket/x"}


def test_check_tracking_error_hides_the_password() -> None:
    with pytest.raises(TrackingError, match="unreachable") as err:
        check_tracking(f"http://ardm:hunter2@127.0.0.1:{_closed_port()}", timeout=2.0)
    assert "hunter2" not in str(err.value) and str(err.value).startswith("http://ardm:***@127.0.0.1:")


def test_outbox_keeps_no_password_and_sync_completes_it(mlflow_server: str, tmp_path: Path, monkeypatch, capsys):
    """An outbox file names the URI without its password; `ardm sync` takes the full one from
    MLFLOW_TRACKING_URI when it names the same server, and asks for it otherwise."""
    secret_uri = mlflow_server.replace("://", "://ardm:hunter2@", 1)  # the test server ignores the credentials
    tracker = SweepTracker(secret_uri, "tracking-tests")
    run_id = tracker.start_sweep("sweep-password", {})
    outbox = Outbox(tmp_path / "outbox")
    outbox.keep(tracker.uri, run_id, {"op": "tags", "tags": {"kept": "yes"}})
    assert all("hunter2" not in p.read_text() for p in (tmp_path / "outbox").rglob("*.jsonl"))
    assert outbox.tracking_uri(run_id) == redact(secret_uri)
    assert repr(tracker) == f"SweepTracker({redact(secret_uri)!r}, 'tracking-tests')"

    assert sync_outbox(outbox) == 1  # no MLFLOW_TRACKING_URI: the calls stay
    assert "recorded without its password" in capsys.readouterr().err and outbox.pending(run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", secret_uri)
    assert sync_outbox(outbox) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and not outbox.pending(run_id)
    assert mlflow.MlflowClient(mlflow_server).get_run(run_id).data.tags["kept"] == "yes"


def test_check_tracking_live_server_passes(mlflow_server: str) -> None:
    check_tracking(mlflow_server)
    check_tracking(mlflow_server + "/")


def test_check_tracking_closed_port_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    uri = f"http://127.0.0.1:{port}"
    attempts = connection_attempts(monkeypatch, port)
    with pytest.raises(TrackingError, match="unreachable") as err:
        check_tracking(uri, timeout=2.0)
    # Fails fast: one connection attempt, bounded by the timeout, no retries.
    assert [(a.timeout, a.socket) for a in attempts] == [(2.0, None)]
    assert str(err.value).startswith(uri) and "\n" not in str(err.value)


def test_check_tracking_silent_server_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # listens (the kernel accepts connections) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        attempts = connection_attempts(monkeypatch, port)
        with pytest.raises(TrackingError, match=r"unreachable \(no answer within 0.5 s\)"):
            check_tracking(f"http://127.0.0.1:{port}", timeout=0.5)
        # One connection, its connect and its read each bounded by the timeout, no retries.
        assert [(a.timeout, a.socket.gettimeout()) for a in attempts] == [(0.5, 0.5)]


def test_check_tracking_non_200(mlflow_server: str) -> None:
    with pytest.raises(TrackingError, match="answered 404"):
        check_tracking(f"{mlflow_server}/not-mlflow")


def test_check_tracking_refuses_file_store(tmp_path: Path) -> None:
    for uri in (str(tmp_path / "mlruns"), f"file://{tmp_path}/mlruns", "mlruns"):
        with pytest.raises(TrackingError, match="refuses the file store") as err:
            check_tracking(uri)
        assert str(err.value).startswith(uri)
        assert "sqlite:////" in str(err.value) and "mlruns/mlflow.db" in str(err.value)


def test_check_tracking_suggests_the_database_file_a_path_names(tmp_path: Path) -> None:
    """A path to a database file (existing, or ending in .db) is that database, not a folder to put one in."""
    existing = tmp_path / "store"
    existing.write_bytes(b"")
    for path in (tmp_path / "mlflow.db", existing):
        with pytest.raises(TrackingError, match="refuses the file store") as err:
            check_tracking(str(path))
        assert str(err.value).endswith(f"e.g. sqlite:///{path}")


def test_check_tracking_sqlite(tmp_path: Path) -> None:
    check_tracking(f"sqlite:///{tmp_path}/mlflow.db")
    check_tracking(f"sqlite:///{tmp_path}/new/mlflow.db")  # one missing folder is created
    assert (tmp_path / "new").is_dir()
    with pytest.raises(TrackingError, match="does not exist"):
        check_tracking(f"sqlite:///{tmp_path}/deep/missing/mlflow.db")
    with pytest.raises(TrackingError, match="directory"):
        check_tracking(f"sqlite:///{tmp_path}")
    with pytest.raises(TrackingError, match="in-memory"):
        check_tracking("sqlite://")
    check_tracking("postgresql://user@db.example/mlflow")  # other schemes are MLflow's to check


def test_sweep_with_nested_trials(tracker: SweepTracker, mlflow_server: str) -> None:
    parent = tracker.start_sweep("sweep-a", CONFIG, tags={"ardm.sweep_file": "configs/sweep.yaml"})
    trials = [
        tracker.trial_run(parent, f"trial_{i}", {"train": {"learning_rate": lr}}) for i, lr in enumerate([1e-3, 3e-4])
    ]
    assert len(set(trials)) == 2

    client = mlflow.MlflowClient(mlflow_server)  # an independent reader, as a report would be
    run = client.get_run(parent)
    assert run.info.run_name == "sweep-a" and run.info.status == "RUNNING"
    assert run.data.params["model.branching"] == "4" and run.data.params["train.learning_rate"] == "0.0001"
    assert run.data.tags["ardm.role"] == "sweep" and run.data.tags["ardm.sweep_file"] == "configs/sweep.yaml"

    nested = tracker.runs_of(parent)
    assert [r.info.run_id for r in nested] == trials
    for i, r in enumerate(nested):
        assert r.info.run_name == f"trial_{i}"
        assert r.data.tags["mlflow.parentRunId"] == parent and r.data.tags["ardm.trial"] == f"trial_{i}"
    assert [r.data.params["train.learning_rate"] for r in nested] == ["0.001", "0.0003"]
    assert tracker.runs_of(trials[0]) == []


def test_metrics_with_steps(tracker: SweepTracker, mlflow_server: str, caplog: pytest.LogCaptureFixture) -> None:
    run = tracker.trial_run(tracker.start_sweep("sweep-metrics", {}), "trial_0", {})
    for step in range(3):
        result = {
            "loss": 1.0 / (step + 1),
            "epoch": np.int64(step),
            "trial_id": "abc",
            "done": False,
            "config": {"a": 1},
        }
        tracker.log_metrics(run, result, step=step)
    with caplog.at_level(logging.WARNING, logger="orchestrator.tracking"):
        tracker.log_metrics(run, {"loss": float("nan"), "grad_norm": float("inf"), "bpd": 3.5}, step=3)
    assert "loss" in caplog.text and "grad_norm" in caplog.text

    client = mlflow.MlflowClient(mlflow_server)
    history = client.get_metric_history(run, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    data = client.get_run(run).data
    assert set(data.metrics) == {"loss", "epoch", "bpd"}  # strings, bools, dicts and non-finite skipped
    tracker.log_metrics(run, {"bpd": 3.4})
    assert [m.step for m in client.get_metric_history(run, "bpd")] == [3, 0]


def test_artifacts_through_proxy(tracker: SweepTracker, mlflow_server: str, tmp_path: Path) -> None:
    run = tracker.start_sweep("sweep-artifacts", {})
    (tmp_path / "report.txt").write_text("hello")
    (tmp_path / "samples" / "grids").mkdir(parents=True)
    (tmp_path / "samples" / "a.png").write_bytes(b"png")
    (tmp_path / "samples" / "grids" / "b.png").write_bytes(b"png2")
    tracker.log_artifact(run, tmp_path / "report.txt")
    tracker.log_artifact(run, str(tmp_path / "samples"), artifact_path="samples")
    with pytest.raises(TrackingError, match="no file or directory"):
        tracker.log_artifact(run, tmp_path / "missing")

    client = mlflow.MlflowClient(mlflow_server)
    assert client.get_run(run).info.artifact_uri.startswith("mlflow-artifacts:")  # served by the proxy
    assert sorted(a.path for a in client.list_artifacts(run)) == ["report.txt", "samples"]
    assert sorted(a.path for a in client.list_artifacts(run, "samples")) == ["samples/a.png", "samples/grids"]
    local = Path(client.download_artifacts(run, "samples/grids/b.png", str(tmp_path / "download")))
    assert local.read_bytes() == b"png2"


def test_end_run_statuses(tracker: SweepTracker, mlflow_server: str) -> None:
    parent = tracker.start_sweep("sweep-end", {})
    done, failed, killed = (tracker.trial_run(parent, name, {}) for name in ("done", "failed", "killed"))
    tracker.end_run(done)
    tracker.end_run(failed, "FAILED", reason="Traceback:\n  ValueError: loss is nan\n" + "x" * 6000)
    tracker.end_run(killed, "KILLED", reason="stopped by ASHA")
    with pytest.raises(ValueError, match="FINISHED"):
        tracker.end_run(parent, "DONE")

    runs = {r.info.run_name: r for r in tracker.runs_of(parent)}
    assert {name: r.info.status for name, r in runs.items()} == {
        "done": "FINISHED",
        "failed": "FAILED",
        "killed": "KILLED",
    }
    assert all(r.info.end_time for r in runs.values())
    assert FAILURE_REASON_TAG not in runs["done"].data.tags
    reason = runs["failed"].data.tags[FAILURE_REASON_TAG]
    assert reason.startswith("Traceback: ValueError: loss is nan x") and len(reason) == MAX_REASON_LENGTH
    assert runs["killed"].data.tags[FAILURE_REASON_TAG] == "stopped by ASHA"
    tracker.set_tags(parent, {"ardm.best_trial": "done"})
    assert mlflow.MlflowClient(mlflow_server).get_run(parent).data.tags["ardm.best_trial"] == "done"


def test_trial_run_resumes(tracker: SweepTracker, mlflow_server: str) -> None:
    parent = tracker.start_sweep("sweep-resume", {})
    params = {"train": {"learning_rate": 1e-3, "batch_size": 32}}
    first = tracker.trial_run(parent, "trial_0", params)
    tracker.log_metrics(first, {"loss": 2.0}, step=0)
    tracker.end_run(first, "FAILED", reason="node lost")

    again = tracker.trial_run(parent, "trial_0", {**params, "seed": 1})  # same values, one new param
    assert again == first
    run = mlflow.MlflowClient(mlflow_server).get_run(first)
    assert run.info.status == "RUNNING"
    assert FAILURE_REASON_TAG not in run.data.tags  # the previous attempt's reason no longer applies
    assert run.data.params["seed"] == "1" and run.data.metrics["loss"] == 2.0
    assert len(tracker.runs_of(parent)) == 1

    with pytest.raises(TrackingError, match=r"param train\.learning_rate is already '0\.001'") as err:
        tracker.trial_run(parent, "trial_0", {"train": {"learning_rate": 3e-4}})
    assert str(err.value).startswith(mlflow_server)
    with pytest.raises(TrackingError, match="sweep run .* not found"):
        tracker.trial_run("0" * 32, "trial_0", {})


def test_start_sweep_resumes(tracker: SweepTracker, mlflow_server: str) -> None:
    parent = tracker.start_sweep("sweep-reopen", CONFIG)
    tracker.end_run(parent, "KILLED", reason="driver interrupted")
    assert tracker.start_sweep("sweep-reopen", CONFIG, tags={"ardm.resumed": "1"}, run_id=parent) == parent
    run = mlflow.MlflowClient(mlflow_server).get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["ardm.resumed"] == "1"
    assert FAILURE_REASON_TAG not in run.data.tags
    with pytest.raises(TrackingError, match="param model.branching"):
        tracker.start_sweep("sweep-reopen", {**CONFIG, "model": {"branching": 8}}, run_id=parent)
    with pytest.raises(TrackingError, match="not found"):
        tracker.start_sweep("sweep-reopen", CONFIG, run_id="f" * 32)


def test_pickled_tracker_works(tracker: SweepTracker, mlflow_server: str) -> None:
    parent = tracker.start_sweep("sweep-pickle", {})  # the original's client is in use
    copy = pickle.loads(pickle.dumps(tracker))
    assert copy.__getstate__() == {
        "uri": mlflow_server,
        "experiment": "tracking-tests",
        "experiment_id": tracker.experiment_id,
    }
    assert copy._client is None  # created lazily in the receiving process
    run = copy.trial_run(parent, "trial_0", {"lr": 0.1})
    copy.log_metrics(run, {"loss": 1.0}, step=5)
    copy.end_run(run)
    [nested] = tracker.runs_of(parent)
    assert nested.info.status == "FINISHED" and nested.data.metrics["loss"] == 1.0


def test_sqlite_without_server(sqlite_uri: str, tmp_path: Path) -> None:
    db_folder = Path(sqlite_uri[len("sqlite:///") :]).parent
    check_tracking(sqlite_uri)
    tracker = SweepTracker(sqlite_uri, "local")
    parent = tracker.start_sweep("local-sweep", CONFIG)
    trials = [tracker.trial_run(parent, f"trial_{i}", {"seed": i}) for i in range(2)]
    tracker.log_metrics(trials[0], {"bpd": 3.0}, step=1)
    (tmp_path / "note.txt").write_text("local")
    tracker.log_artifact(trials[0], tmp_path / "note.txt")
    tracker.end_run(trials[0])
    tracker.end_run(trials[1], "FAILED", reason="oom")

    assert (db_folder / "mlflow.db").is_file()
    runs = pickle.loads(pickle.dumps(tracker)).runs_of(parent)
    assert [(r.info.run_id, r.info.status, r.data.params["seed"]) for r in runs] == [
        (trials[0], "FINISHED", "0"), (trials[1], "FAILED", "1")
    ]  # fmt: skip
    # Artifacts live next to the database, not in the working directory's ./mlruns.
    assert list((db_folder / "mlartifacts" / "local").glob(f"{trials[0]}/artifacts/note.txt"))
    assert SweepTracker(sqlite_uri, "local").experiment_id == tracker.experiment_id


def test_experiment_creation_race(sqlite_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = SweepTracker(sqlite_uri, "raced")
    # The second process looks before the first one's create lands, then its own create fails.
    original = mlflow.MlflowClient.get_experiment_by_name
    lookups = []

    def late_lookup(self: mlflow.MlflowClient, name: str) -> mlflow.entities.Experiment | None:
        lookups.append(name)
        return None if len(lookups) == 1 else original(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", late_lookup)
    assert SweepTracker(sqlite_uri, "raced").experiment_id == first.experiment_id
    assert lookups == ["raced", "raced"]


def test_deleted_experiment_is_refused(sqlite_uri: str) -> None:
    tracker = SweepTracker(sqlite_uri, "gone")
    tracker.client.delete_experiment(tracker.experiment_id)
    with pytest.raises(TrackingError, match="experiment 'gone' is deleted"):
        SweepTracker(sqlite_uri, "gone")


def test_a_mistyped_experiment_lists_the_experiments_there(sqlite_uri: str, capsys: pytest.CaptureFixture) -> None:
    for name in ("listed-alpha", "listed-beta"):
        SweepTracker(sqlite_uri, name)
    capsys.readouterr()  # MLflow's log lines when it creates the database
    assert main(["report", "listed-alpah", "--tracking-uri", sqlite_uri]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no experiment named 'listed-alpah' (experiments there: " in err
    assert "listed-alpha" in err and "listed-beta" in err
    for i in range(10):  # more than ten: the ten most recent, then "..."
        SweepTracker(sqlite_uri, f"listed-{i}")
    assert main(["report", "listed-alpah", "--tracking-uri", sqlite_uri]) == 2
    listed = capsys.readouterr().err.strip().split("(experiments there: ")[1].removesuffix(")").split(", ")
    assert listed == [f"listed-{i}" for i in reversed(range(10))] + ["..."]


def test_experiments_open_in_the_model_training_view(sqlite_uri: str) -> None:
    """New experiments carry MLflow 3's kind tag for model training, and older ones get it on first use."""
    tracker = SweepTracker(sqlite_uri, "kind")
    assert tracker.client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    older = tracker.client.create_experiment("made-by-hand")
    assert EXPERIMENT_KIND_TAG not in tracker.client.get_experiment(older).tags
    SweepTracker(sqlite_uri, "made-by-hand")
    assert tracker.client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_trial_data_as_mlflow_dataset_inputs(sqlite_uri: str, tmp_path: Path) -> None:
    """Each split of the sweep's shards becomes a dataset input: spec as name, content digest, sizes."""
    convert_dataset("digits", str(tmp_path / "shards"), 500)
    records = [split_record(tmp_path / "shards", split) | {"context": context}
               for split, context in (("train", "training"), ("test", "testing"))]
    tracker = SweepTracker(sqlite_uri, "datasets")
    run_id = tracker.trial_run(tracker.start_sweep("s", CONFIG), "t", {"seed": 0})
    tracker.log_datasets(run_id, records)
    inputs = tracker.client.get_run(run_id).inputs.dataset_inputs
    by_context = {i.tags[0].value: i.dataset for i in inputs}
    assert set(by_context) == {"training", "testing"}
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    for dataset, split in ((by_context["training"], train), (by_context["testing"], test)):
        assert dataset.name == "digits" and len(dataset.digest) == 16
        assert json.loads(dataset.profile) == {"num_rows": len(split.images), "shape": [1, 8, 8], "num_classes": 17,
                                                  "modality": "image"}
    assert by_context["training"].digest != by_context["testing"].digest
    # The digest follows the content: the same data converted again has the same digest.
    convert_dataset("digits", str(tmp_path / "again"), 500)
    assert split_record(tmp_path / "again", "train")["digest"] == by_context["training"].digest


def test_system_metrics_of_a_run(sqlite_uri: str) -> None:
    """While the context is open, the machine's CPU and memory use land in the run under system/."""
    tracker = SweepTracker(sqlite_uri, "system")
    run_id = tracker.trial_run(tracker.start_sweep("s", CONFIG), "t", {"seed": 0})
    with system_metrics(sqlite_uri, run_id, 0.05):
        deadline = time.monotonic() + 300  # a safety net only: the first sample lands within a second
        while "system/cpu_utilization_percentage" not in tracker.client.get_run(run_id).data.metrics:
            assert time.monotonic() < deadline, "no system metrics were logged"
    logged = tracker.client.get_run(run_id).data.metrics
    assert logged["system/system_memory_usage_megabytes"] > 0
    assert logged["system/cpu_utilization_percentage"] >= 0
