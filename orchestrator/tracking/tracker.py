"""MLflow tracking for sweeps: one parent run per sweep, one nested run per trial.

The sweep driver, Ray Tune trial actors and Ray Train rank-0 workers all log through a
`SweepTracker`, often in different processes or on different nodes. So everything goes through an
`mlflow.MlflowClient` bound to an explicit tracking URI (orchestrator.tracking.uris), never through
MLflow's global "active run" state, which is per process and would silently log to the wrong place
(or nowhere) in a worker.

Outages: with an `outbox` folder a tracker keeps the calls it cannot make and delivers them later; see
orchestrator/tracking/outbox.py.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from numbers import Real
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Param, Run
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from orchestrator.messages import TRUNCATED, one_line
from orchestrator.names import (
    EXPERIMENT_KIND_TAG,
    FAILURE_REASON_TAG,
    MODEL_TRAINING_KIND,
    ROLE_TAG,
    SWEEP_ROLE,
    TRIAL_ROLE,
    TRIAL_TAG,
)
from orchestrator.tracking.errors import TrackingError, TrackingUnreachable
from orchestrator.tracking.outbox import Outbox, reaching, send
from orchestrator.tracking.uris import redact, sqlite_path

# The package's logger, "orchestrator.tracking": the tracker's warnings (an outage, a metric not logged).
logger = logging.getLogger(__package__)

# A failure reason is a summary for the runs table; the full traceback belongs in the worker log.
MAX_REASON_LENGTH = 5000
END_STATUSES = ("FINISHED", "FAILED", "KILLED")

# During an outage, calls within this many seconds of the last failed one go straight to the outbox, so
# a hung server (which costs a timeout, not a refused connection) is waited for at most once per interval.
RETRY_INTERVAL_S = 30.0


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params: {"model.branching": "4", "train.learning_rate": "0.0001"}.

    Lists and tuples become JSON (one param, not one per element), an empty dict becomes "{}" so its
    key stays visible, and values longer than MLflow's limit are truncated with a visible marker
    (MLflow rejects the whole batch otherwise). Passwords in URIs (tracking.uri, storage.path) become ***.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
            continue
        text = redact(json.dumps(value, default=str) if isinstance(value, (list, tuple, dict)) else str(value))
        if len(text) > MAX_PARAM_VAL_LENGTH:
            text = text[: MAX_PARAM_VAL_LENGTH - len(TRUNCATED)] + TRUNCATED
        flat[name] = text
    return flat


def _quote(value: str) -> str:
    """A string literal for an MLflow search filter (which has no escape for a quote inside one)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise TrackingError(f"cannot search MLflow for a value containing both quote characters: {value!r}")


@contextmanager
def system_metrics(uri: str, run_id: str, interval_s: float) -> Iterator[None]:
    """MLflow's system metrics (CPU, memory, disk, network, and GPU where pynvml finds one) of this
    process's machine into run `run_id` under system/, sampled and logged every `interval_s`
    seconds on a background thread, so the training loop pays nothing; 0 turns it off. A
    restarted worker continues the run's system-metric steps."""
    if interval_s <= 0:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


class SweepTracker:
    """Logs one sweep (parent run) and its trials (nested runs) to an MLflow experiment.

    Picklable, so Ray can ship it to trial actors and training workers: the state is only the URI,
    the experiment name and id (and the outbox, if any), and each process creates its own
    MlflowClient on first use.

    With an `outbox` (a local or NFS folder that the processes of a machine share), `log_metrics`,
    `set_tags`, `end_run` and `log_artifact` survive an outage: they fail fast, keep the call in the
    outbox, warn once per outage and return; the first call for a run after the server is back (or
    `flush`, or `ardm sync`) delivers that run's kept calls first, in order, with their original steps
    and timestamps. Calls that need an answer (`start_sweep`, `trial_run`, `runs_of`) always raise.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        create: bool = True,
        outbox: str | Path | None = None,
        retry_interval: float = RETRY_INTERVAL_S,
    ) -> None:
        """Bind to `experiment` at `uri`, creating the experiment if it does not exist yet (with
        `create`; else a missing experiment is a TrackingError). `outbox`: keep calls there during an
        outage (None: a failing call raises); `retry_interval`: seconds between attempts to reach the
        server during an outage (calls in between go straight to the outbox)."""
        self.uri = uri
        self.experiment = experiment
        self.outbox = None if outbox is None else Outbox(outbox)
        self.retry_interval = retry_interval
        self._client: mlflow.MlflowClient | None = None
        self._outage: str | None = None  # what failed, while this process sees an outage
        self._retry_at = 0.0  # time.monotonic() from which to try the server again
        if not create and self.client.get_experiment_by_name(experiment) is None:
            raise TrackingError(f"{self.shown_uri}: no experiment named {experiment!r} ({self._experiment_names()})")
        self.experiment_id = self._ensure_experiment()

    def __getstate__(self) -> dict[str, Any]:
        """Only the plain state travels; an MlflowClient holds sessions and stores of this process, and
        an outage is this process's view. A tracker without an outbox pickles as it did before outboxes."""
        state = {"uri": self.uri, "experiment": self.experiment, "experiment_id": self.experiment_id}
        if self.outbox is not None:
            state |= {"outbox": str(self.outbox.folder), "retry_interval": self.retry_interval}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the plain state; the client is recreated lazily in the receiving process."""
        outbox = state.get("outbox")
        self.__dict__.update(state)
        self.outbox = None if outbox is None else Outbox(outbox)
        self.retry_interval = state.get("retry_interval", RETRY_INTERVAL_S)
        self._client = None
        self._outage = None
        self._retry_at = 0.0

    def __repr__(self) -> str:
        return f"SweepTracker({self.shown_uri!r}, {self.experiment!r})"

    @property
    def shown_uri(self) -> str:
        """The tracking URI as messages, files and the report name it: without its password (`redact`)."""
        return redact(self.uri)

    @property
    def client(self) -> mlflow.MlflowClient:
        """This process's MlflowClient for `uri`, created on first use."""
        if self._client is None:
            if self.shown_uri != self.uri:  # MLflow prints run links naming the URI as given, password and all
                os.environ.setdefault(MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name, "true")
            self._client = mlflow.MlflowClient(tracking_uri=self.uri)
        return self._client

    def _ensure_experiment(self) -> str:
        """The experiment's id, creating the experiment if needed."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            try:
                return self.client.create_experiment(self.experiment, artifact_location=self._artifact_location(),
                                                     tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
            except MlflowException:
                # Another process (a second sweep driver, a worker) created it between our get and
                # create; the name is unique, so take theirs. Anything else is re-raised below.
                found = self.client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise TrackingError(
                f"{self.shown_uri}: experiment {self.experiment!r} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}) or use another name"
            )
        if found.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older version, or by hand
            self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return found.experiment_id

    def _experiment_names(self, limit: int = 10) -> str:
        """The store's experiments, most recently updated first (at most `limit`), for a mistyped name."""
        found = self.client.search_experiments(max_results=limit + 1, order_by=["last_update_time DESC"])
        names = [e.name for e in found[:limit]] + (["..."] if len(found) > limit else [])
        return f"experiments there: {', '.join(names)}" if names else "it has no experiments"

    def _artifact_location(self) -> str | None:
        """For SQLite, artifacts go next to the database instead of MLflow's `./mlruns` default.

        MLflow would resolve `./mlruns` against the creating process's working directory, and a
        folder named mlruns is also what MLflow takes for a legacy file store. Servers (and other
        databases) keep their own configured artifact root: None.
        """
        db = sqlite_path(self.uri)
        if db is None:
            return None
        return (db.absolute().parent / "mlartifacts" / re.sub(r"[^A-Za-z0-9._-]+", "_", self.experiment)).as_uri()

    def start_sweep(
        self, name: str, config: dict, tags: dict[str, str] | None = None, run_id: str | None = None
    ) -> str:
        """The parent run of one sweep; returns its run id.

        `config` is the sweep's resolved base config, logged flattened as params. With `run_id`
        (resuming a sweep) that run is reopened as RUNNING instead; its params must agree with
        `config` (new keys are added), so a resume cannot silently change the recorded base config.
        """
        all_tags = {**(tags or {}), ROLE_TAG: SWEEP_ROLE}
        if run_id is None:
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
            self._log_params(run.info.run_id, flatten(config), {})
            return run.info.run_id
        run = self._get_run(run_id, SWEEP_ROLE)
        self._reopen(run)
        self._log_params(run_id, flatten(config), run.data.params)
        self.set_tags(run_id, all_tags)
        return run_id

    def trial_run(self, parent_id: str, trial_name: str, params: dict) -> str:
        """The nested run of trial `trial_name` under sweep run `parent_id`; returns its run id.

        A trial that already has a run under this parent (a resumed sweep, a restarted trial) gets
        that run back, reopened as RUNNING, so its metrics continue in one place. Re-logging the
        same params is fine; a changed value raises TrackingError, since MLflow params are immutable.
        """
        self._get_run(parent_id, SWEEP_ROLE)
        flat = flatten(params)
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = {_quote(parent_id)} "
            f"and tags.`{TRIAL_TAG}` = {_quote(trial_name)}",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        if found:
            run = found[0]
            self._reopen(run)
            self._log_params(run.info.run_id, flat, run.data.params)
            return run.info.run_id
        tags = {MLFLOW_PARENT_RUN_ID: parent_id, TRIAL_TAG: trial_name, ROLE_TAG: TRIAL_ROLE}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=trial_name)
        self._log_params(run.info.run_id, flat, {})
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        """Log the finite numeric values of `metrics` in one batch, at `step` (MLflow's 0 if None).

        Other values are skipped silently so that a whole Ray Tune result dict (with its trial id,
        dates, flags and config) can be passed as is. NaN and inf are skipped with a warning: MLflow
        stores them as sentinel numbers that distort plots and comparisons.
        """
        self._log_entries(run_id, [(key, value, 0 if step is None else int(step)) for key, value in metrics.items()])

    def log_curves(self, run_id: str, curves: dict[str, dict[int, float]]) -> None:
        """Log metrics that are curves, {key: {step: value}} (e.g. bpd against network calls), in one batch."""
        self._log_entries(run_id, [(key, value, int(step)) for key, points in curves.items()
                                   for step, value in points.items()])

    def _log_entries(self, run_id: str, entries: list[tuple[str, object, int]]) -> None:
        """(key, value, step) entries as one batch; non-numbers skipped, NaN and inf with a warning."""
        now = int(time.time() * 1000)  # the time of logging, kept if the call waits in the outbox
        batch = []
        for key, value, step in entries:
            if not isinstance(value, Real) or isinstance(value, bool):
                continue
            if not math.isfinite(value):
                logger.warning("run %s: not logging metric %s = %s (not finite)", run_id, key, value)
                continue
            batch.append([key, float(value), now, step])
        if batch:
            self._submit(run_id, {"op": "metrics", "metrics": batch})

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file, or a directory's contents, under `artifact_path` in the run's artifacts.

        During an outage the file or directory is copied into the outbox, so it may be temporary.
        """
        path = Path(local_path).absolute()
        if not path.exists():
            raise TrackingError(f"{self.shown_uri}: run {run_id}: no file or directory {local_path} "
                                "to log as an artifact")
        self._submit(run_id, {"op": "artifact", "path": str(path), "artifact_path": artifact_path})

    def log_datasets(self, run_id: str, records: list[dict]) -> None:
        """Record datasets as the run's MLflow dataset inputs: each a split record of
        ardm.data.parquet.split_record with "context" ("training" or "testing")."""
        self._submit(run_id, {"op": "inputs", "datasets": records})

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set (or overwrite) tags on a run, in one batch."""
        if tags:
            self._submit(run_id, {"op": "tags", "tags": {key: str(value) for key, value in tags.items()}})

    def end_run(self, run_id: str, status: str = "FINISHED", reason: str | None = None) -> None:
        """Terminate a run as FINISHED, FAILED or KILLED; `reason` is kept as tag ardm.failure_reason."""
        if status not in END_STATUSES:
            raise ValueError(f"end status must be one of {', '.join(END_STATUSES)}, got {status!r}")
        if reason is not None:
            self.set_tags(run_id, {FAILURE_REASON_TAG: one_line(redact(reason), MAX_REASON_LENGTH)})
        self._submit(run_id, {"op": "end", "status": status, "end_time": int(time.time() * 1000)})

    def flush(self, run_id: str | None = None) -> bool:
        """Deliver the calls kept in the outbox, of run `run_id` or of every run there, to this tracker's
        server now; True when none are left. An outage leaves them where they are (and warns, once)."""
        if self.outbox is None:
            return True
        try:
            for run in [run_id] if run_id is not None else self.outbox.runs():
                if self.outbox.pending(run):
                    self.outbox.deliver(self.client, run, fail_fast=True)
        except TrackingUnreachable as err:
            self._begin_outage(err)
            return False
        self._end_outage()
        return True

    def _submit(self, run_id: str, call: dict) -> None:
        """Make a call (in its outbox form) on run `run_id`, or keep it in the outbox during an outage.

        The run's kept calls go first, so the server sees every call in the order it was made.
        """
        if self.outbox is None:
            send(self.client, run_id, call, Path(), fail_fast=False)
            return
        if self._outage is None or time.monotonic() >= self._retry_at:
            try:
                if self.outbox.pending(run_id):
                    self.outbox.deliver(self.client, run_id, fail_fast=True)
                send(self.client, run_id, call, Path(), fail_fast=True)
            except TrackingUnreachable as err:
                self._begin_outage(err)
            else:
                self._end_outage()
                return
        self.outbox.keep(self.shown_uri, run_id, call)

    def _begin_outage(self, err: TrackingUnreachable) -> None:
        """Note a failed attempt; the first one of an outage warns, in one line."""
        self._retry_at = time.monotonic() + self.retry_interval
        if self._outage is None:
            folder = self.outbox.folder
            logger.warning(
                f"{err}; training goes on, tracking calls are kept in {folder} and delivered when the "
                f"server answers (or by: ardm sync --outbox {folder})"
            )
        self._outage = str(err)

    def _end_outage(self) -> None:
        """The server answered: an outage this process saw is over."""
        if self._outage is not None:
            logger.info(f"{self.shown_uri}: tracking server answers again; calls kept in {self.outbox.folder} "
                        "are delivered")
            self._outage = None

    def run_now(self, run_id: str) -> Run | None:
        """Run `run_id` as the server holds it now; None when the server cannot say: unreachable (one
        fail-fast attempt, not MLflow's minutes of retries) or the run unknown. For the reads a trial makes
        while it goes on (a restart's count, whether training ended), which an outage must not stall."""
        try:
            with reaching(self.client, fail_fast=True):
                return self.client.get_run(run_id)
        except (TrackingUnreachable, MlflowException):
            return None

    def runs_of(self, parent_id: str) -> list[Run]:
        """The nested (trial) runs of sweep run `parent_id`, oldest first."""
        runs: list[Run] = []
        page_token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = {_quote(parent_id)}",
                order_by=["attributes.start_time ASC"],
                page_token=page_token,
            )
            runs.extend(page)
            page_token = page.token
            if not page_token:
                return runs

    def _get_run(self, run_id: str, what: str) -> Run:
        """The run `run_id` of this experiment, or a TrackingError saying which `what` run is missing."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException as err:
            raise TrackingError(
                f"{self.shown_uri}: {what} run {run_id} not found ({one_line(err.message, 200)})"
            ) from None
        if run.info.experiment_id != self.experiment_id:
            raise TrackingError(
                f"{self.shown_uri}: {what} run {run_id} belongs to experiment {run.info.experiment_id}, "
                f"not {self.experiment!r} ({self.experiment_id})"
            )
        return run

    def _reopen(self, run: Run) -> None:
        """Mark a run RUNNING again, dropping the failure reason of its previous attempt."""
        run_id = run.info.run_id
        if self.outbox is not None and self.outbox.pending(run_id):
            # Calls kept from the previous attempt (its end status, say) must land before the reopening, not after.
            self.outbox.deliver(self.client, run_id, fail_fast=True)
            run = self.client.get_run(run_id)
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")
        if FAILURE_REASON_TAG in run.data.tags:
            self.client.delete_tag(run.info.run_id, FAILURE_REASON_TAG)

    def _log_params(self, run_id: str, params: dict[str, str], logged: dict[str, str]) -> None:
        """Log the params not yet in `logged`; a param logged with another value is a TrackingError."""
        for key, value in params.items():
            if key in logged and logged[key] != value:
                raise TrackingError(
                    f"{self.shown_uri}: run {run_id}: param {key} is already {one_line(logged[key], 100)!r}, "
                    f"cannot change it to {one_line(value, 100)!r}"
                )
        new = [Param(key, value) for key, value in params.items() if key not in logged]
        if new:
            self.client.log_batch(run_id, params=new)
