"""Fault: credentials in the environment, in a sweep started the way `ray submit` starts it on a
cluster (and the way cluster.yaml exports its variables there): the session's submitted text sweep
(tests/support/submitted_sweep.py), run as `python FILE.yaml --set ...` through the installed
launcher from a home folder, with cloud keys, tokens and passwords in its driver's environment and,
through the job's runtime environment, in every Ray worker's. The sweep runs with the overrides, and
none of the values may reach what the sweep and the tracking store write: the sweep's storage (Tune's
state, checkpoints, post-processing, the tracking outbox, the report) and the MLflow server's database
and artifacts.

The tracking URI comes from MLFLOW_TRACKING_URI with a password in it, as a server behind basic auth
or a database backend is named: before the fix that password was written to sweep.json and to the
report (in storage and as the sweep run's artifact), and MLflow printed it in its run links.

Every file there is searched for every value, as bytes, and inside Parquet tables and their
metadata, zip archives (torch checkpoints) and gzip files, whose compression would hide a value.
"""

from __future__ import annotations

import gzip
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.submitted_sweep import NAME, OVERRIDES
from tests.support.sweep_files import sweep_runs

pytestmark = pytest.mark.slow



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


def test_a_submitted_sweep_writes_no_credentials(submitted_text_sweep):
    submitted = submitted_text_sweep
    assert submitted.driver.returncode == 0, submitted.driver.stdout[-3000:]
    _, parents, trials = sweep_runs(submitted.tracking, NAME)
    assert len(parents) == 1 and [r.info.status for r in trials] == ["FINISHED"]
    # One trial, as the overrides say (the file's grid has two), post-processing on but small.
    assert {k: trials[0].data.params[k] for k in OVERRIDES} == OVERRIDES
    assert (submitted.storage / "report").is_dir() and (submitted.storage / "tune").is_dir()
    assert any((store / "mlflow.db").is_file() for store in submitted.stores), submitted.stores
    assert _leaks([submitted.storage, *submitted.stores], submitted.secrets) == []
    assert submitted.secrets["URI_PASSWORD"] not in submitted.driver.stdout
