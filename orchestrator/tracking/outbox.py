"""A durable outbox for MLflow tracking calls that could not reach the server during an outage.

A `SweepTracker` (orchestrator/tracking/tracker.py) given an outbox folder keeps going when the server goes away
mid-run. The calls that cannot be made (metrics with their steps and timestamps, tags, end of run,
artifacts) are appended to `<outbox>/<run_id>.jsonl`, one warning per outage names the server and the
folder, and the next call for that run delivers them first, in order, once the server answers again.
What is still there when the processes end is delivered by `ardm sync` (orchestrator/tracking/sync.py). Without
an outbox a failing call raises, as it always did.

File format: one JSON-lines file per run, a header line `{"run_id": ..., "tracking_uri": ...}` (the URI
without its password: see `redact`) then one
line per call: `{"op": "metrics", "metrics": [[key, value, timestamp_ms, step], ...]}`,
`{"op": "tags", "tags": {...}}`, `{"op": "end", "status": ..., "end_time": ...}`,
`{"op": "inputs", "datasets": [split records, see dataset_input]}` or
`{"op": "artifact", "path": ..., "artifact_path": ...}` (a copy under `<outbox>/artifacts/<run_id>/`).
Calls MLflow refuses are set aside in `<run_id>.refused.jsonl`.

Delivery is in order and at least once: calls are removed only once delivered, so a batch cut off by
an outage is sent again, which does no harm (see `Outbox.deliver`). Processes sharing a folder take
turns on `<outbox>/.lock`, so no call is delivered twice by two of them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import mlflow
import requests
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, RunTag
from mlflow.exceptions import MlflowException, RestException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from ardm.modality import IMAGE
from ardm.storage import is_uri
from orchestrator.messages import describe, one_line
from orchestrator.tracking.errors import TrackingError, TrackingUnreachable
from orchestrator.tracking.uris import redact

logger = logging.getLogger(__name__)

# With an outbox a call need not wait for the server: MLflow's default policy (7 retries with backoff,
# 120 s timeouts) would stall training for minutes. One retry covers a dropped connection.
FAIL_FAST_RETRIES = 1
FAIL_FAST_TIMEOUT_S = 10  # a metric batch takes milliseconds; only a hung server takes this long
MAX_BATCH_METRICS = 1000  # MLflow's limit on metrics per log_batch


def _is_outage(err: BaseException) -> bool:
    """Whether `err` means the server could not be reached or could not serve, rather than refused the call.

    MLflow turns connection errors, timeouts and exhausted retries into a plain MlflowException with
    INTERNAL_ERROR (TEMPORARILY_UNAVAILABLE for a database that is down); a RestException is the
    server's own answer (an invalid metric, a deleted run), which no retry will change.
    """
    if isinstance(err, requests.HTTPError):  # artifact uploads: a 5xx is the server's trouble, a 4xx ours
        return err.response is None or err.response.status_code >= 500
    if isinstance(err, requests.RequestException):
        return True
    if isinstance(err, RestException):
        return err.error_code == "TEMPORARILY_UNAVAILABLE"
    return isinstance(err, MlflowException) and err.error_code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE")


def _innermost(err: BaseException) -> BaseException:
    """The root cause of an exception chain, e.g. ConnectionRefusedError rather than MLflow's message
    wrapping requests' wrapping urllib3's, which would hide it in a warning."""
    while (inner := err.__cause__ or err.__context__) is not None:
        err = inner
    return err


# MLflow's HTTP client reads its retry policy and timeout from the environment at every request and has
# no per-client setting, so a fail-fast call sets them for its duration, under this lock.
_ENV_LOCK = threading.RLock()


@contextmanager
def _fail_fast(timeout: int | None) -> Iterator[None]:
    """MLflow's HTTP requests made inside retry once, and time out after `timeout` s (None: MLflow's setting)."""
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(FAIL_FAST_RETRIES)}
    if timeout is not None:
        values["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout)
    with _ENV_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@contextmanager
def reaching(
    client: mlflow.MlflowClient,
    fail_fast: bool,
    timeout: int | None = FAIL_FAST_TIMEOUT_S,
) -> Iterator[None]:
    """Make MLflow calls with `client`: fail fast if asked, and raise an outage as TrackingUnreachable."""
    try:
        with _fail_fast(timeout) if fail_fast else nullcontext():
            yield
    except Exception as err:
        if isinstance(err, TrackingError) or not _is_outage(err):
            raise
        reason = one_line(describe(_innermost(err)), 200)
        uri = redact(client.tracking_uri)
        raise TrackingUnreachable(f"{uri}: tracking server unreachable ({redact(reason)})") from err


def send(client: mlflow.MlflowClient, run_id: str, call: dict, root: Path, fail_fast: bool) -> None:
    """Make one tracking call, in its outbox form, on run `run_id`; artifact paths are relative to `root`.

    Artifact uploads keep MLflow's timeout even when failing fast: a large checkpoint that the server
    passes on to its artifact store can take longer than a metric batch's timeout to be acknowledged.
    """
    op = call["op"]
    with reaching(client, fail_fast, timeout=None if op == "artifact" else FAIL_FAST_TIMEOUT_S):
        if op == "metrics":
            client.log_batch(run_id, metrics=[Metric(key, value, ts, step) for key, value, ts, step in call["metrics"]])
        elif op == "tags":
            client.log_batch(run_id, tags=[RunTag(key, value) for key, value in call["tags"].items()])
        elif op == "end":
            client.set_terminated(run_id, call["status"], end_time=call["end_time"])
        elif op == "inputs":
            client.log_inputs(run_id, [dataset_input(record) for record in call["datasets"]])
        else:
            path = root / call["path"]
            if path.is_dir():
                client.log_artifacts(run_id, str(path), call["artifact_path"])
            else:
                client.log_artifact(run_id, str(path), call["artifact_path"])


_OPS = ("metrics", "tags", "end", "inputs", "artifact")


def dataset_input(record: dict) -> DatasetInput:
    """An MLflow dataset input from a split record (ardm.data.parquet.split_record plus "context":
    training or testing): the spec as name, the content digest, the shard folder as source, and the
    sizes as its profile, which the MLflow UI shows."""
    source_type = record["source"].split("://", 1)[0] if is_uri(record["source"]) else "local"
    profile = {"num_rows": record["rows"], "shape": record["shape"], "num_classes": record["num_classes"],
               "modality": record.get("modality", IMAGE)}  # records queued before text had none
    dataset = Dataset(name=record["name"], digest=record["digest"], source_type=source_type,
                      source=json.dumps({"uri": record["source"]}), profile=json.dumps(profile))
    return DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, record["context"])])


def _batches(calls: list[dict]) -> list[list[dict]]:
    """The calls in order, consecutive metric calls grouped up to MLflow's batch limit (one request each)."""
    groups: list[list[dict]] = []
    size = 0
    for call in calls:
        count = len(call["metrics"]) if call["op"] == "metrics" else 0
        if count and groups and groups[-1][0]["op"] == "metrics" and size + count <= MAX_BATCH_METRICS:
            groups[-1].append(call)
            size += count
        else:
            groups.append([call])
            size = count
    return groups


@dataclass
class Delivered:
    """What one delivery of a run's outbox sent to the tracking server."""

    run_id: str
    tracking_uri: str
    metrics: int = 0  # metric values
    tags: int = 0
    artifacts: int = 0  # files or folders
    datasets: int = 0  # dataset inputs
    status: str | None = None  # the end status, if the run was ended
    refused: int = 0  # calls MLflow refused, set aside in <run_id>.refused.jsonl

    def add(self, call: dict) -> None:
        """Count a delivered call."""
        if call["op"] == "metrics":
            self.metrics += len(call["metrics"])
        elif call["op"] == "tags":
            self.tags += len(call["tags"])
        elif call["op"] == "end":
            self.status = call["status"]
        elif call["op"] == "inputs":
            self.datasets += len(call["datasets"])
        else:
            self.artifacts += 1

    def __str__(self) -> str:
        parts = [f"{self.metrics} metric value(s)", f"{self.tags} tag(s)", f"{self.artifacts} artifact(s)"]
        if self.datasets:
            parts.append(f"{self.datasets} dataset input(s)")
        if self.status:
            parts.append(f"ended {self.status}")
        if self.refused:
            parts.append(f"{self.refused} call(s) refused, set aside in {self.run_id}.refused.jsonl")
        return f"run {self.run_id} -> {self.tracking_uri}: {', '.join(parts)}"


class Outbox:
    """Tracking calls that could not reach the server, kept on disk in order until they are delivered.

    One JSON-lines file per run, `<folder>/<run_id>.jsonl`: a header line with the run id and the
    tracking URI, then one line per call. Artifacts are copied under `<folder>/artifacts/` when kept,
    since the originals are often temporary (a checkpoint downloaded from S3). Processes that share
    the folder (a trial's training worker and its driver, `ardm sync`) take an exclusive lock on
    `<folder>/.lock` to append or deliver, so lines never interleave and no call is delivered twice
    by two processes. Use a local or NFS folder; `flock` does not work on object stores.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).absolute()  # Ray workers run in other working directories

    def __repr__(self) -> str:
        return f"Outbox({str(self.folder)!r})"

    def runs(self) -> list[str]:
        """The ids of the runs with calls waiting here."""
        return sorted(p.stem for p in self.folder.glob("*.jsonl") if "." not in p.stem)

    def pending(self, run_id: str) -> bool:
        """Whether calls of run `run_id` are waiting here (checked before every call, so only a stat)."""
        return self._file(run_id).exists()

    def tracking_uri(self, run_id: str) -> str | None:
        """The tracking URI the waiting calls of `run_id` were meant for (None if the header is unreadable)."""
        header, _ = self._read(self._file(run_id))
        return header.get("tracking_uri")

    def keep(self, uri: str, run_id: str, call: dict) -> None:
        """Append a call of run `run_id` (meant for `uri`) durably; an artifact is copied in first. The
        header names `uri` without its password (`redact`): `ardm sync` takes the full one from the
        environment or --tracking-uri."""
        uri = redact(uri)
        if call["op"] == "artifact":
            call = {**call, "path": self._copy(run_id, Path(call["path"]))}
        with self._locked():
            path = self._file(run_id)
            lines = [] if path.exists() else [{"run_id": run_id, "tracking_uri": uri}]
            self._append(path, [*lines, call])

    def deliver(self, client: mlflow.MlflowClient, run_id: str, fail_fast: bool) -> Delivered:
        """Send the calls of run `run_id` to `client`'s server in order, then remove them.

        Consecutive metric calls go as one batch. An outage raises TrackingUnreachable and keeps the
        calls not yet delivered (a batch cut off mid-request is sent again: MLflow's SQL store ignores a
        metric it already has with the same key, value, step and timestamp; tags and the end status are
        set again to the same values; an artifact is uploaded again over itself). A call MLflow refuses
        is set aside in `<run_id>.refused.jsonl` with a warning, so it cannot block the others. A run
        that the server does not know (a wrong URI given to `ardm sync`) is a TrackingError, and its
        calls stay here.
        """
        done = Delivered(run_id, redact(client.tracking_uri))
        with self._locked():
            path = self._file(run_id)
            if not path.exists():  # another process delivered them in the meantime
                return done
            header, calls = self._read(path)
            try:
                with reaching(client, fail_fast):
                    client.get_run(run_id)
            except MlflowException as err:  # the server's answer; an outage is TrackingUnreachable
                raise TrackingError(
                    f"{redact(client.tracking_uri)}: run {run_id} not found ({one_line(err.message, 200)}); "
                    f"its tracking calls stay in {path}"
                ) from None
            header = header or {"run_id": run_id, "tracking_uri": redact(client.tracking_uri)}  # a torn header line
            groups = _batches(calls)
            for i, group in enumerate(groups):
                try:
                    self._deliver_group(client, run_id, group, fail_fast, done)
                except TrackingUnreachable:
                    self._rewrite(path, header, [call for g in groups[i:] for call in g])
                    raise
            path.unlink()
            with suppress(OSError):  # not empty: copies of refused artifacts stay with their calls
                (self.folder / "artifacts" / run_id).rmdir()
        return done

    def _deliver_group(
        self, client: mlflow.MlflowClient, run_id: str, group: list[dict], fail_fast: bool, done: Delivered
    ) -> None:
        """Send a group of calls as one request. If MLflow refuses a merged batch, its calls are sent one
        by one, so that only the refused ones are set aside."""
        merged = [metric for call in group for metric in call.get("metrics", ())]
        request = group[0] if len(group) == 1 else {"op": "metrics", "metrics": merged}
        try:
            send(client, run_id, request, self.folder, fail_fast)
        except (MlflowException, OSError) as err:  # refused (an outage is TrackingUnreachable): no retry will help
            if len(group) == 1:
                self._refuse(run_id, group, err)
                done.refused += 1
            else:
                for call in group:
                    self._deliver_group(client, run_id, [call], fail_fast, done)
            return
        done.add(request)
        if request["op"] == "artifact":
            self._drop_copy(run_id, request["path"])

    def _file(self, run_id: str) -> Path:
        return self.folder / f"{run_id}.jsonl"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's exclusive lock (blocking): one process at a time appends or delivers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _copy(self, run_id: str, source: Path) -> str:
        """Copy an artifact (file or folder) into the outbox; its path relative to the folder."""
        target = self.folder / "artifacts" / run_id / uuid.uuid4().hex / source.name
        target.parent.mkdir(parents=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
        return str(target.relative_to(self.folder))

    def _drop_copy(self, run_id: str, relative: str) -> None:
        """Remove a delivered artifact's copy: its own folder artifacts/<run_id>/<unique>/, nothing else."""
        copy = (self.folder / relative).parent
        if copy.parent == self.folder / "artifacts" / run_id:
            shutil.rmtree(copy, ignore_errors=True)

    @staticmethod
    def _append(path: Path, records: list[dict]) -> None:
        """Append records as lines in one write and fsync: a kept call survives a crash of this process."""
        # A crash mid-write can leave a last line without its newline; start a fresh line rather than
        # corrupt this record as well (the torn one is skipped when read).
        torn = False
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as existing:
                existing.seek(-1, os.SEEK_END)
                torn = existing.read(1) != b"\n"
        text = "\n" * torn + "".join(json.dumps(record) + "\n" for record in records)
        with open(path, "ab") as out:
            out.write(text.encode())
            out.flush()
            os.fsync(out.fileno())

    def _rewrite(self, path: Path, header: dict, calls: list[dict]) -> None:
        """Replace the run's file by `header` and `calls` atomically (temporary file, then rename)."""
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.unlink(missing_ok=True)
        self._append(temporary, [header, *calls])
        os.replace(temporary, path)

    def _refuse(self, run_id: str, calls: list[dict], err: BaseException) -> None:
        """Set calls that MLflow refused aside in `<run_id>.refused.jsonl`, with a warning."""
        path = self.folder / f"{run_id}.refused.jsonl"
        self._append(path, [{**call, "error": one_line(err, 500)} for call in calls])
        logger.warning(
            f"run {run_id}: MLflow refused {len(calls)} kept tracking call(s) ({one_line(err, 200)}); "
            f"set aside in {path}"
        )

    @staticmethod
    def _read(path: Path) -> tuple[dict, list[dict]]:
        """The header and the calls of a run's file; torn or unknown lines are skipped with a warning."""
        header: dict = {}
        calls: list[dict] = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if number == 1 and isinstance(record, dict) and "run_id" in record:
                header = record
            elif isinstance(record, dict) and record.get("op") in _OPS:
                calls.append(record)
            elif line.strip():
                logger.warning("%s:%d: skipping an unreadable tracking call (%s)", path, number, one_line(line, 100))
        return header, calls
