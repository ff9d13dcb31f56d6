"""Trained models in MLflow: a trial's checkpoint as a LoggedModel (registered on request), and every
MLflow form of --checkpoint resolved to the same weights, through the CLI as well."""

import tempfile
from pathlib import Path

import pytest
import torch

from ardm.checkpoint import CHECKPOINT_FILE, load_model
from orchestrator.cli import main
from orchestrator.models import local_checkpoint, log_trial_model
from orchestrator.names import MODEL_ID_TAG
from orchestrator.tracking import SweepTracker, default_tracking_uri
from tests.support.reference import checkpoint_of


@pytest.fixture(scope="module")
def logged(trained_digits, tmp_path_factory):
    """(tracking URI, run id, model id, the original EMA model) of a trial with a logged, registered model."""
    folder = tmp_path_factory.mktemp("models")
    uri = default_tracking_uri(folder)
    tracker = SweepTracker(uri, "models-test")
    run_id = tracker.trial_run(tracker.start_sweep("models-sweep", {"sweep": {"name": "m"}}), "t", {"seed": 0})
    checkpoint = checkpoint_of(trained_digits[0], folder / CHECKPOINT_FILE)
    tracker.log_artifact(run_id, checkpoint, "checkpoint")
    model_id = log_trial_model(tracker, run_id, checkpoint, "ardm-digits", {"test_bpd": 1.25}, "ardm-digits")
    tracker.client.set_registered_model_alias("ardm-digits", "best", "1")
    return uri, run_id, model_id, load_model(checkpoint, ema=True), tracker


def test_the_logged_model_is_linked_to_its_run_and_metrics(logged):
    uri, run_id, model_id, _, tracker = logged
    model = tracker.client.get_logged_model(model_id)
    assert model.source_run_id == run_id and str(model.status).endswith("READY")
    assert model.params["model.branching"] == "17" and {m.key for m in model.metrics} == {"test_bpd"}
    assert tracker.client.get_run(run_id).data.tags[MODEL_ID_TAG] == model_id
    version = tracker.client.get_model_version("ardm-digits", "1")
    assert version.source == f"models:/{model_id}" and version.run_id == run_id


@pytest.mark.parametrize("form", ["runs:/{run}/checkpoint/checkpoint.pt", "models:/{model}", "models:/ardm-digits/1",
                                  "models:/ardm-digits@best", "{run}"])
def test_every_mlflow_reference_gives_the_same_weights(logged, form, tmp_path):
    uri, run_id, model_id, original, _ = logged
    path = local_checkpoint(form.format(run=run_id, model=model_id), tmp_path, uri)
    assert tmp_path in Path(path).parents  # downloaded where the caller said
    again = load_model(path, ema=True)
    for (name, a), (_, b) in zip(original.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_cli_takes_mlflow_references_and_refuses_bad_ones_in_one_line(logged, monkeypatch, capsys, tmp_path):
    uri = logged[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the command's download goes
    args = ["--data", "digits", "--max-images", "4", "--samples-per-image", "1"]
    assert main(["evaluate", "--checkpoint", "models:/ardm-digits@best", *args]) == 0
    assert "negative ELBO" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [], "the downloaded checkpoint outlived the command"
    for bad in ("models:/ardm-digits/7", "models:/no-such-model/1", f"runs:/{'0' * 32}/checkpoint/checkpoint.pt"):
        assert main(["evaluate", "--checkpoint", bad, *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ardm: error: {bad}: not found at {uri}") and len(err.strip().splitlines()) == 1, err
