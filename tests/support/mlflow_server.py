"""Pytest fixture `mlflow_server`: a real `mlflow server` on 127.0.0.1 for the whole test session.

Import it into a conftest (`from tests.support.mlflow_server import mlflow_server  # noqa: F401`). The server uses
a SQLite backend and proxies artifacts into a temporary folder, like the cluster setup, so tests see
the REST store and the artifact proxy rather than MLflow's in-process shortcuts. It starts once per
session (about ten seconds on two cores) and is stopped, with all its processes, at the end.

`MlflowServer` is the same server as an object for fault tests: `kill()` it (SIGKILL, no clean
shutdown) and `start()` it again on the same port and stores.
"""

from __future__ import annotations

import contextlib
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

START_TIMEOUT_S = 300.0  # a safety net, not a speed check: a loaded 2-core machine needs minutes to migrate
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


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 that can be killed and started again on the same port and stores."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        """The server keeps its SQLite database, artifacts and log in `root`; it listens on `port` (a free one)."""
        self.root = root
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        """Whether this object started the server and has not killed or stopped it since."""
        return self._proc is not None

    def start(self) -> str:
        """Start the server and wait until it is healthy; its URI."""
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        # The job-execution runner (huey consumers, several processes) serves MLflow's GenAI jobs,
        # which tracking does not use; without it the server starts faster and idles on 2 processes.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log_path = self.root / "server.log"
        with open(log_path, "ab") as log:  # appended: a restarted server's log follows the killed one's
            # A new session makes the server and its uvicorn child one process group to stop together.
            self._proc = subprocess.Popen(
                command,
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(self.uri):
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                pytest.fail(f"mlflow server exited with {code}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mlflow server not healthy after {START_TIMEOUT_S:g} s:\n{_tail(log_path)}")
            time.sleep(0.2)
        return self.uri

    def kill(self) -> None:
        """SIGKILL the server's process group, as a crash or a lost node would: no clean shutdown."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=STOP_TIMEOUT_S)
            self._proc = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL), with all its processes."""
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI (http://127.0.0.1:PORT) of a running MLflow tracking server with artifact proxying."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield server.start()
    finally:
        server.stop()
