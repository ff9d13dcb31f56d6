"""Pytest fixture `mlflow_server`: a real `mlflow server` on 127.0.0.1 for the whole test session.

Import it into a conftest (`from mlflow_server import mlflow_server  # noqa: F401`). The server uses
a SQLite backend and proxies artifacts into a temporary folder, like the cluster setup, so tests see
the REST store and the artifact proxy rather than MLflow's in-process shortcuts. It starts once per
session (about ten seconds on two cores) and is stopped, with all its processes, at the end.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def _free_port() -> int:
    """A port that is free now (the server binds it a few seconds later; a clash fails loudly)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# No proxies: a proxy configured in the environment must not stand between the tests and 127.0.0.1.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(uri: str) -> bool:
    try:
        with _DIRECT.open(f"{uri}/health", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group: `mlflow server` runs uvicorn as a child process."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI (http://127.0.0.1:PORT) of a running MLflow tracking server with artifact proxying."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--workers", "1",
    ]  # fmt: skip
    # The job-execution runner (huey consumers, several processes) serves MLflow's GenAI jobs,
    # which tracking does not use; without it the server starts faster and idles on 2 processes.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    stderr_path = root / "server.log"
    with open(stderr_path, "wb") as log:
        # A new session makes the server and its uvicorn child one process group to stop together.
        proc = subprocess.Popen(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(uri):
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{_tail(stderr_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after {START_TIMEOUT_S:g} s:\n{_tail(stderr_path)}")
            time.sleep(0.2)
        yield uri
    finally:
        _stop(proc)
