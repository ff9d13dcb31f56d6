"""Pytest fixture `submitted_text_sweep`: the text demo sweep, run once per session the way `ray submit`
runs a sweep on a cluster, with credentials in its environment.

Import it into a conftest (`from tests.support.submitted_sweep import submitted_text_sweep  # noqa: F401`).
One sweep serves two tests, as each sweep costs a Ray Train start and post-processing:
tests/orchestrator/test_text_sweep.py reads what the text sweep reports, and
tests/faults/test_secrets.py searches every file it wrote for the credentials.

`ray submit cluster.yaml FILE.yaml` copies the sweep file alone into the head's home folder and runs it
as `python FILE.yaml --set ...` through the installed launcher, with the variables cluster.yaml exports
(MLFLOW_TRACKING_URI among them) in the driver's environment, and, through the job's runtime environment,
in every Ray worker's. The fixture does the same on the session's Ray cluster and MLflow server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from orchestrator.launcher import install_launcher
from tests.support.sweep_files import write_sweep

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
NAME = "text-demo"
# Variables that hold credentials (cloud keys, tokens, passwords), each set to a unique canary value.
SECRET_VARIABLES = [
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
    "AZURE_CLIENT_SECRET", "GOOGLE_API_KEY", "HF_TOKEN", "GITHUB_TOKEN", "WANDB_API_KEY",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "DATABRICKS_TOKEN",
    "PGPASSWORD", "ARDM_DB_PASSWORD",
]
# Set on the command line, as a user of `ray submit` would: the file's grid has two trials, this one.
OVERRIDES = {"model.branching": "3", "train.steps": "20"}


@dataclass
class SubmittedSweep:
    """driver: the finished `python FILE.yaml` process (its output in stdout); secrets: variable -> value
    (URI_PASSWORD: the password inside MLFLOW_TRACKING_URI); storage: the sweep's folder; stores: the
    MLflow server's database and artifact folders; tracking: the server's URI (without the password)."""

    driver: subprocess.CompletedProcess
    secrets: dict[str, str]
    storage: Path
    stores: list[Path]
    tracking: str


def _text_demo() -> dict:
    """sweeps/text-demo.yaml with fewer steps, sequences and samples."""
    config = yaml.safe_load((SWEEPS / "text-demo.yaml").read_text())
    config["train"] |= {"checkpoint_every": 10, "log_every": 10}
    config["eval"] |= {"samples_per_image": 1, "max_images": 16}
    config["postprocess"] |= {"table_samples_per_step": 2, "table_ranges": 1, "max_images": 8, "sample_grid": 2,
                              "budgets": [5, 20, "full"]}
    return config


@pytest.fixture(scope="session")
def submitted_text_sweep(ray_cluster, mlflow_server, tmp_path_factory) -> SubmittedSweep:
    tmp_path = tmp_path_factory.mktemp("submitted")
    secrets = {name: f"ardm-canary-{name.lower()}-{uuid.uuid4().hex}" for name in [*SECRET_VARIABLES, "URI_PASSWORD"]}
    written = write_sweep(tmp_path, NAME, _text_demo(), mlflow_server)
    home = tmp_path / "home"  # `ray submit` copies the file alone to the head's home folder
    home.mkdir()
    (home / written.name).write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(written.read_text()).items()
                                                     if k != "tracking"}))
    written.unlink()
    install_launcher()
    # The tracking URI comes from the environment: the server's, with a password in it, as a server
    # behind basic auth or a database backend is named.
    variables = {**{k: v for k, v in secrets.items() if k != "URI_PASSWORD"},
                 "MLFLOW_TRACKING_URI": mlflow_server.replace("://", f"://ardm:{secrets['URI_PASSWORD']}@", 1)}
    env = {**os.environ, **variables, "RAY_ADDRESS": ray_cluster.address,
           # the job's runtime environment, as `ray job submit` passes it: every worker gets the secrets too
           "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": variables}})}
    overrides = [arg for key, value in OVERRIDES.items() for arg in ("--set", f"{key}={value}")]
    driver = subprocess.run([sys.executable, written.name, *overrides], cwd=home, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=900)
    # The session's MLflow server keeps its database and artifacts in its own tmp folder.
    stores = sorted(tmp_path_factory.getbasetemp().glob("mlflow_server*"))
    return SubmittedSweep(driver, secrets, tmp_path / "storage" / NAME, stores, mlflow_server)
