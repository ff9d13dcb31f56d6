"""Fault: credentials in the environment, in a sweep started the way `ray submit` starts it on a
cluster (and the way cluster.yaml exports its variables there): the sweep file copied alone into a
home folder and run as `python FILE.yaml --set ...` through the installed launcher, with cloud keys,
tokens and passwords in its driver's environment and, through the job's runtime environment, in
every Ray worker's. The sweep runs with the overrides, and none of the values may reach what the
sweep and the tracking store write: the sweep's storage (Tune's state, checkpoints,
post-processing, the tracking outbox, the report) and the MLflow server's database and artifacts.

The tracking URI comes from MLFLOW_TRACKING_URI with a password in it, as a server behind basic auth
or a database backend is named: before the fix that password was written to sweep.json and to the
report (in storage and as the sweep run's artifact), and MLflow printed it in its run links.

Every file there is searched for every value, as bytes, and inside Parquet tables and their
metadata, zip archives (torch checkpoints) and gzip files, whose compression would hide a value.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator.launcher import install_launcher
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

SECRET_VARIABLES = [
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_STORAGE_KEY",
    "AZURE_CLIENT_SECRET", "GOOGLE_API_KEY", "HF_TOKEN", "GITHUB_TOKEN", "WANDB_API_KEY",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "DATABRICKS_TOKEN",
    "PGPASSWORD", "ARDM_DB_PASSWORD",
]


def _contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) of a file and of what its compression hides: Parquet tables, zip members, gzip."""
    data = path.read_bytes()
    yield str(path), data
    if data[:4] == b"PAR1":
        parquet = pq.ParquetFile(path)
        yield f"{path} (table)", repr(parquet.read().to_pylist()).encode()
        yield f"{path} (metadata)", repr(parquet.schema_arrow.metadata).encode()
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{path}:{member}", archive.read(member)
    elif data[:2] == b"\x1f\x8b":
        yield f"{path} (gunzipped)", gzip.decompress(data)


def _leaks(folders: list[Path], secrets: dict[str, str]) -> list[str]:
    """Every (file, variable) where a secret's value was found; checks that something was searched."""
    found, searched = [], 0
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            for where, data in _contents(path):
                searched += 1
                found += [f"{where}: {name}" for name, value in secrets.items() if value.encode() in data]
    assert searched > 20, f"only {searched} files searched in {folders}"
    return found


def test_a_submitted_sweep_writes_no_credentials(ray_cluster, mlflow_server, tmp_path, tmp_path_factory):
    secrets = {name: f"ardm-canary-{name.lower()}-{uuid.uuid4().hex}" for name in [*SECRET_VARIABLES, "URI_PASSWORD"]}
    name = "secrets"
    written = write_sweep(tmp_path, name, TINY, mlflow_server)
    home = tmp_path / "home"  # `ray submit` copies the file alone to the head's home folder
    home.mkdir()
    (home / written.name).write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(written.read_text()).items()
                                                     if k != "tracking"}))
    written.unlink()
    install_launcher()
    # The tracking URI comes from the environment:
    # the server's, with a password in it, as a server behind basic auth or a database backend is named
    variables = {**{k: v for k, v in secrets.items() if k != "URI_PASSWORD"},
                 "MLFLOW_TRACKING_URI": mlflow_server.replace("://", f"://ardm:{secrets['URI_PASSWORD']}@", 1)}
    env = {**os.environ, **variables, "RAY_ADDRESS": ray_cluster.address,
           # the job's runtime environment, as `ray job submit` passes it: every worker gets the secrets too
           "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"env_vars": variables}})}
    driver = subprocess.run([sys.executable, written.name, "--set", "model.branching=4", "--set", "train.steps=2",
                             "--set", "train.log_every=1"],
                            cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=900)
    assert driver.returncode == 0, driver.stdout[-3000:]
    _, parents, trials = sweep_runs(mlflow_server, name)
    assert len(parents) == 1 and [r.info.status for r in trials] == ["FINISHED"]
    # One trial, as the overrides say (the file's grid has two), post-processing on but small.
    assert trials[0].data.params["model.branching"] == "4" and trials[0].data.params["train.steps"] == "2"
    storage = tmp_path / "storage" / name
    assert (storage / "report").is_dir() and (storage / "tune").is_dir()
    # The session's MLflow server keeps its database and artifacts in its own tmp folder.
    stores = sorted(tmp_path_factory.getbasetemp().glob("mlflow_server*"))
    assert any((store / "mlflow.db").is_file() for store in stores), stores
    assert _leaks([storage, *stores], secrets) == []
    assert secrets["URI_PASSWORD"] not in driver.stdout
