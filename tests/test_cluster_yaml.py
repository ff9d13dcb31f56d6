"""cluster.yaml against Ray's schema, and what the sweeps and `ardm forward` need of it."""

import copy
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from orchestrator.forward import PRIVATE_ADDRESS_COMMAND

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _ray_validate(config: dict) -> dict:
    """What `ray up` does before it talks to AWS: fill in the provider's defaults, then check Ray's schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    return full


def test_cluster_yaml_passes_rays_schema():
    full = _ray_validate(_cluster())
    assert full["cluster_name"] == "ardm" and full["provider"]["type"] == "aws"
    assert full["provider"]["region"] and full["provider"]["availability_zone"]


def _unknown_top_level_key(c):
    c["gpu_workers"] = 4


def _node_type_without_resources(c):
    del c["available_node_types"]["gpu-1x-a10g"]["resources"]


def _unknown_head_type(c):
    c["head_node_type"] = "no-such-type"


def _fractional_gpus(c):
    c["available_node_types"]["gpu-1x-a10g"]["resources"]["GPU"] = 0.5


@pytest.mark.parametrize("breakage", [_unknown_top_level_key, _node_type_without_resources, _unknown_head_type,
                                      _fractional_gpus])
def test_broken_cluster_yaml_fails_rays_schema(breakage):
    config = _cluster()
    breakage(config)
    with pytest.raises(Exception):  # noqa: B017  jsonschema.ValidationError or ValueError, as `ray up` raises them
        _ray_validate(config)


def test_cluster_yaml_has_what_the_sweeps_need():
    c = _cluster()
    types = c["available_node_types"]
    head = types[c["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types and all(t.get("max_workers", 0) >= 1 for t in gpu_types.values())
    # sweeps/cifar.yaml asks 1 GPU + 8 CPUs per Ray Train worker: some GPU node must hold one worker
    assert any(t["resources"]["CPU"] >= 8 * t["resources"]["GPU"] for t in gpu_types.values())
    assert c["max_workers"] >= max(t["max_workers"] for t in gpu_types.values())

    (project, source), = c["file_mounts"].items()
    assert source == "." and Path(project).name != "ardm"  # a folder `ardm` in ~ would shadow the package
    assert {".venv", "runs", "mlflow.db"} <= set(c["rsync_exclude"])

    setup = "\n".join(c["setup_commands"])
    assert f"pip install -q --disable-pip-version-check -e {project}" in setup
    assert "ardm install-launcher" in setup
    assert setup.index(f"-e {project}") < setup.index("ardm install-launcher")
    assert "/mnt/shared" in setup and "mount -t nfs4" in setup and "EFS_ID=fs-XXXXXXXXXXXXXXXXX" in setup

    start = c["head_start_ray_commands"]
    ray_head = next(i for i, cmd in enumerate(start) if "ray start --head" in cmd)
    mlflow = next(i for i, cmd in enumerate(start) if "mlflow server" in cmd)
    assert ray_head < mlflow
    # Both services bind the head's private address (the one `ardm forward` tunnels to), never every interface.
    private = f"$({PRIVATE_ADDRESS_COMMAND})"
    assert f'nohup mlflow server --host "{private}" --port 5000' in start[mlflow] and start[mlflow].rstrip().count("&")
    assert f"--dashboard-host={private}" in start[ray_head]
    assert "0.0.0.0" not in yaml.safe_dump(c)
    assert "sqlite:////mnt/shared/mlflow/mlflow.db" in start[mlflow]
    assert "--artifacts-destination /mnt/shared/mlflow/artifacts" in start[mlflow]
    assert any("$RAY_HEAD_IP:5000" in cmd for cmd in c["worker_start_ray_commands"])


def _all_commands(c: dict) -> list[str]:
    keys = ["initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands"]
    return [cmd for key in keys for cmd in c.get(key, [])]


def test_cluster_commands_are_valid_shell():
    for cmd in _all_commands(_cluster()):
        result = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert result.returncode == 0, f"{cmd}\n{result.stderr}"


def test_cluster_commands_use_real_options():
    """The flags given to `ray start` and `mlflow server` exist in the installed Ray and MLflow."""
    from mlflow.cli import server
    from ray.scripts.scripts import start

    options = {"ray start": {o for p in start.params for o in p.opts},
               "mlflow server": {o for p in server.params for o in p.opts}}
    seen = set()
    for cmd in _all_commands(_cluster()):
        for program, known in options.items():
            if program in cmd:
                used = {w.split("=")[0] for w in shlex.split(cmd.split(program, 1)[1]) if w.startswith("--")}
                assert used <= known, f"{program}: unknown {used - known}"
                seen.add(program)
    assert seen == set(options)
