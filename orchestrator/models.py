"""Trained models in MLflow: a trial's EMA model as an MLflow 3 LoggedModel (optionally registered),
and every way a command may name a checkpoint, resolved to a local file.

A logged model holds `checkpoint.pt` (ardm.checkpoint: the spec and weights, all that
ardm.checkpoint.load_model needs to rebuild it) and `ardm_model.json` (the spec, the data and how
to load it). It is linked to the trial's run (its source run) and to the run's test metrics, so
the MLflow UI shows it in the run's and the experiment's Models columns.

Checkpoint references (`--checkpoint` of every command):
    a path or a storage URI (s3://...)      used as it is
    runs:/RUN_ID/path/to/checkpoint.pt      an artifact of a run
    models:/MODEL_ID                        a logged model (m-...)
    models:/NAME/VERSION, models:/NAME@alias  a registered model
    RUN_ID                                  a trial's run: its checkpoint artifact
resolved through the tracking URI in the usual order (orchestrator.tracking.uris.resolve_tracking_uri),
so a remote server works as well as a local store.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from ardm.checkpoint import CHECKPOINT_FILE, load_checkpoint
from orchestrator import names
from orchestrator.messages import one_line
from orchestrator.tracking import SweepTracker, TrackingError, check_tracking, redact, resolve_tracking_uri

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MLFLOW_URI = ("runs:/", "models:/")


def log_trial_model(tracker: SweepTracker, run_id: str, checkpoint: str | Path, name: str,
                    metrics: dict[str, float], register_as: str = "") -> str:
    """Log a trial's checkpoint file as a LoggedModel of its run, link `metrics` (e.g. test_bpd) to
    it, register it under `register_as` when given, and tag the run with the model's id; returns
    the model id."""
    client = tracker.client
    saved = load_checkpoint(checkpoint)
    spec = saved["model_spec"]
    params = {f"model.{k}": json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in spec.items()}
    model = client.create_logged_model(tracker.experiment_id, name=name, source_run_id=run_id, params=params,
                                       model_type="ardm")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / CHECKPOINT_FILE).write_bytes(Path(checkpoint).read_bytes())
        (folder / names.MODEL_CARD_FILE).write_text(json.dumps({
            "spec": spec, "data": saved.get("extra", {}).get("data"), "step": saved.get("step"),
            "load": f"ardm.checkpoint.load_model('{CHECKPOINT_FILE}', ema=True)",
        }, indent=1))
        client.log_model_artifacts(model.model_id, str(folder))
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0, model_id=model.model_id)
                                      for key, value in metrics.items()])
    client.finalize_logged_model(model.model_id, "READY")
    if register_as:
        try:
            client.create_registered_model(register_as)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":  # an earlier trial registered the name: fine
                raise
        _use_store(tracker.uri)
        client.create_model_version(register_as, f"models:/{model.model_id}", run_id=run_id,
                                    model_id=model.model_id)
    tracker.set_tags(run_id, {names.MODEL_ID_TAG: model.model_id})
    return model.model_id


def _use_store(uri: str) -> None:
    """Point MLflow's process-wide URIs at `uri`: MLflow looks models:/ URIs up through them, whatever
    client or tracking_uri argument the call was given."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def local_checkpoint(ref: str, download_to: Path, tracking_uri: str | None = None) -> str:
    """A checkpoint reference (see the module docstring) as a path or URI that load_model reads:
    MLflow references are downloaded into `download_to` (the caller's folder: it decides how long the
    copy lives). A reference MLflow cannot resolve is a TrackingError naming it and the store."""
    if not (ref.startswith(_MLFLOW_URI) or (_RUN_ID.match(ref) and not Path(ref).exists())):
        return ref
    uri = resolve_tracking_uri(tracking_uri)
    check_tracking(uri)
    artifact = f"runs:/{ref}/{names.CHECKPOINT_ARTIFACT}" if _RUN_ID.match(ref) else ref
    _use_store(uri)
    try:
        download_to.mkdir(parents=True, exist_ok=True)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact, dst_path=str(download_to),
                                                         tracking_uri=uri, registry_uri=uri))
    except (MlflowException, OSError) as err:
        raise TrackingError(f"{ref}: not found at {redact(uri)} ({one_line(err, 200)})") from None
    if local.is_dir():
        found = sorted(local.rglob(CHECKPOINT_FILE))
        if not found:
            raise TrackingError(f"{ref}: holds no {CHECKPOINT_FILE} (not an ARDM model)")
        local = found[0]
    return str(local)
