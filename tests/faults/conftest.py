"""Fixtures of the fault tests."""

from collections.abc import Iterator

import pytest

from tests.support.mlflow_server import MlflowServer
from tests.support.nodes import node_fault  # noqa: F401  (a fixture: nodes added to the session's cluster, faults befall them)


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One `mlflow server` for the fault tests that kill and restart it (a start takes seconds; the
    session's server, which other tests use meanwhile, is never killed)."""
    server = MlflowServer(tmp_path_factory.mktemp("outage_server"))
    server.start()
    yield server
    server.kill()  # its stores are thrown away: no need to wait for a clean shutdown


@pytest.fixture
def up(server: MlflowServer) -> MlflowServer:
    """That server, running at the start of each test even if an earlier one failed mid-outage."""
    if not server.running:
        server.start()
    return server
