"""Integration: tiny sweeps on a real two-node local Ray cluster against a real `mlflow server`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from orchestrator.cli import main

pytestmark = pytest.mark.slow

TINY = {
    "sweep": {"name": "tiny"},
    "data": {"spec": "digits"},
    "model": {"preset": "cpu-tiny", "branching": {"grid": [17, 4]}, "parameterization": "data"},
    "train": {"steps": 6, "batch_size": 8, "checkpoint_every": 3, "log_every": 2, "learning_rate": 0.002,
              "ema_decay": 0.9},
    "eval": {"samples_per_image": 1, "max_images": 40},
    "resources": {"workers_per_trial": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
    "failure": {"train_max_failures": 1, "trial_max_failures": 0},
}


def _write(tmp_path: Path, name: str, config: dict, tracking: str) -> Path:
    config = {**config, "sweep": {"name": name}, "tracking": {"uri": tracking},
              "storage": {"path": str(tmp_path / "storage")}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _runs(uri: str, experiment: str):
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ardm.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


def test_tiny_sweep_tracks_parent_and_nested_runs(ray_cluster, mlflow_server, tmp_path, capsys):
    path = _write(tmp_path, "tiny-sweep", TINY, mlflow_server)
    assert main(["sweep", str(path)]) == 0
    summary = capsys.readouterr().out
    assert summary.count(" bpd") == 2 and "unfinished" not in summary and mlflow_server in summary
    client, parents, children = _runs(mlflow_server, "tiny-sweep")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["trials"] == 2 and parents[0].data.metrics["trials_failed"] == 0
    assert sorted(r.data.params["model.branching"] for r in children) == ["17", "4"]
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags.get("ardm.failure_reason")
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.params["train.steps"] == "6" and run.data.params["resources.workers_per_trial"] == "2"
        history = client.get_metric_history(run.info.run_id, "train_bpd")
        assert [m.step for m in history] == [2, 4, 6]
        assert run.data.metrics["test_bpd"] > 0 and run.data.metrics["test_bpd_stderr"] > 0
        assert run.data.metrics["wall_time_s"] > 0
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
        assert artifacts == ["checkpoint/checkpoint.pt"]
    # Each trial's 2 workers needed more CPUs than one node has free: both nodes were used.
    from ray.util.state import list_actors

    nodes = {a.node_id for a in list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=1000)}
    assert len(nodes) == 2
    # Resuming a finished sweep re-runs nothing and reuses the parent run.
    assert main(["sweep", str(path), "--resume"]) == 0
    _, parents_after, children_after = _runs(mlflow_server, "tiny-sweep")
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert sorted(r.info.run_id for r in children_after) == sorted(r.info.run_id for r in children)


def test_sweep_file_runs_as_ray_submit_runs_it(ray_cluster, mlflow_server, tmp_path):
    """`ray submit` copies the file alone to the head's home and runs `python file.yaml ARGS`."""
    path = _write(tmp_path, "submitted", TINY, mlflow_server)
    alone = tmp_path / "home"
    alone.mkdir()
    shutil.copy(path, alone / "submitted.yaml")
    path.unlink()
    from orchestrator.launcher import install_launcher

    install_launcher()
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address}
    result = subprocess.run(
        [sys.executable, "submitted.yaml", "--set", "model.branching=4", "--set", "train.steps=2",
         "--set", "train.log_every=1"],
        cwd=alone, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children = _runs(mlflow_server, "submitted")
    assert len(parents) == 1 and len(children) == 1
    assert children[0].data.params["model.branching"] == "4" and children[0].data.params["train.steps"] == "2"


def test_unreachable_tracking_server_fails_before_ray_work(tmp_path, capsys):
    path = _write(tmp_path, "offline", TINY, "http://127.0.0.1:9")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "http://127.0.0.1:9" in err and "unreachable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "storage" / "offline" / "tune").exists()
