"""Shared fixtures: a small model trained on the embedded digits, a real MLflow server, and one
two-node local Ray cluster for the whole session."""

import os

import pytest
import torch

from ardm.data import load_dataset
from ardm.model import ModelSpec, build_ardm
from ardm.networks import get_preset
from ardm.train import TrainConfig, train
from tests.support.mlflow_server import mlflow_server  # noqa: F401  (session fixture: a real `mlflow server` process)
from tests.support.submitted_sweep import submitted_text_sweep  # noqa: F401  (session fixture: a sweep run as ray submit runs it)

# The markers a test gets from the session fixtures it uses, directly or through another fixture.
FIXTURE_MARKERS = {"ray_cluster": "ray", "mlflow_server": "mlflow"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses `ray_cluster` with `ray` and every one that uses `mlflow_server` with
    `mlflow`, so that `-m "not ray"` or `-m "not mlflow"` leaves out what starts those processes."""
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def no_tracking_uri_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their own tracking URI: one exported in the shell (cluster.yaml exports one on every
    node) must not send them, or what they expect to find in a local mlflow.db, to a server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def trained_digits():
    """(EMA model, test images): an order-agnostic ARDM on digits (K=17, D=64), trained for seconds."""
    train_set, test_set = load_dataset("digits", "train"), load_dataset("digits", "test")
    spec = ModelSpec(shape=train_set.shape, num_classes=17, branching=17, parameterization="data",
                     network=get_preset("cpu-tiny").to_dict())
    torch.manual_seed(0)
    config = TrainConfig(steps=150, batch_size=32, learning_rate=3e-3, ema_decay=0.9, checkpoint_every=10**6)
    result = train(build_ardm(spec), train_set.images, config, progress=False)
    return result.ema, test_set.images


@pytest.fixture(scope="session")
def ray_cluster():
    """A two-node local Ray cluster (3 logical CPUs each), shared by every Ray test of the session."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # Ray Train polls for drains (preemption notices) every 5 s by default: once a second, a preemption test
    # needs a notice 8 s ahead, not 15, and half the training steps. Its processes inherit this environment.
    os.environ["RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S"] = "1"
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
