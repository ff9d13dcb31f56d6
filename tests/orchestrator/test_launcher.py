"""The cluster entry points: cluster.yaml against Ray's schema, the `python SWEEP.yaml` hook behind `ray submit`
(orchestrator/launcher.py) and `ardm submit` through Ray's Job Submission API (orchestrator/submit.py)."""

import argparse
import copy
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from orchestrator import launcher
from orchestrator.forward import PRIVATE_ADDRESS_COMMAND
from orchestrator.submit import (
    JobFailedError,
    SubmitError,
    add_submit_arguments,
    run_submit,
    submit_sweep,
    sweep_entrypoint,
)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
DEMO_SWEEP = ROOT / "sweeps" / "demo.yaml"  # 2 trials (branching 256 and 4)


# ---------------------------------------------------------------------------------------------- cluster.yaml


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


# ------------------------------------------------------------------------------------ launcher: in process


@pytest.mark.parametrize(("text", "expected"), [
    ("sweep:\n  name: x\n", True),
    ("# a sweep\ndata: {spec: digits}\nsweep: {name: x}\n", True),
    ('"sweep":\n  name: x\n', True),
    ("sweep:", True),
    ("data:\n  sweep:\n    name: x\n", False),  # not top level
    ("# sweep: x\ndata: 1\n", False),
    ("sweeps:\n  - x\n", False),
    ("", False),
])
def test_is_sweep_file(tmp_path, text, expected):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    assert launcher.is_sweep_file(path) is expected


def test_is_sweep_file_needs_a_yaml_file(tmp_path):
    (tmp_path / "s.txt").write_text("sweep:\n  name: x\n")
    (tmp_path / "d.yaml").mkdir()
    (tmp_path / "s.yml").write_text("sweep:\n  name: x\n")
    assert not launcher.is_sweep_file(tmp_path / "s.txt")
    assert not launcher.is_sweep_file(tmp_path / "d.yaml")
    assert not launcher.is_sweep_file(tmp_path / "missing.yaml")
    assert launcher.is_sweep_file(tmp_path / "s.yml")


def test_sweep_command_puts_ray_submit_arguments_after_the_file():
    argv = ["/home/u/x.yaml", "--set", "a.b=1", "--dry-run"]
    cmd = launcher.sweep_command(argv, ["/venv/bin/python", "-u", "-X", "dev", *argv], "/venv/bin/python")
    assert cmd[:5] == ["/venv/bin/python", "-u", "-X", "dev", "-c"]
    assert cmd[6:] == ["sweep", "/home/u/x.yaml", "--set", "a.b=1", "--dry-run"]
    assert launcher.sweep_command(["x.yaml"], None, "py")[:2] == ["py", "-c"]


@pytest.fixture
def replaced(monkeypatch):
    """Record the command run_if_sweep_file would exec instead of replacing the test process."""
    calls = []
    monkeypatch.setattr(launcher, "_replace_process", calls.append)
    monkeypatch.setattr(launcher, "_launched", False)
    return calls


def test_run_if_sweep_file_hands_over_once(tmp_path, monkeypatch, replaced):
    sweep = tmp_path / "x.yaml"
    sweep.write_text("sweep:\n  name: x\n")
    monkeypatch.setattr(sys, "argv", [str(sweep), "--set", "train.steps=5"])
    launcher.run_if_sweep_file()
    launcher.run_if_sweep_file()  # the .pth is processed again when site dirs repeat
    assert len(replaced) == 1
    assert replaced[0][-4:] == ["sweep", str(sweep), "--set", "train.steps=5"]


def test_run_if_sweep_file_leaves_other_programs_alone(tmp_path, monkeypatch, replaced):
    plain = tmp_path / "plain.yaml"
    plain.write_text("data: photos:8\n")
    for argv in [[str(plain)], ["-c"], ["-m"], [], [str(tmp_path / "missing.yaml")], ["script.py", "x.yaml"]]:
        monkeypatch.setattr(sys, "argv", argv)
        launcher.run_if_sweep_file()
    monkeypatch.delattr(sys, "argv")
    launcher.run_if_sweep_file()
    assert replaced == []


def test_run_if_sweep_file_swallows_errors_of_the_check(tmp_path, monkeypatch, replaced):
    def broken(path):
        raise PermissionError(path)

    monkeypatch.setattr(launcher, "is_sweep_file", broken)
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "x.yaml")])
    launcher.run_if_sweep_file()
    assert replaced == []


def test_install_launcher_is_idempotent(tmp_path):
    site = tmp_path / "site"
    path = launcher.install_launcher(site)
    assert path == site / launcher.PTH_NAME
    text = path.read_text()
    assert text.startswith("import ") and text.count("\n") == 1  # one line that site executes
    assert launcher.install_launcher(str(site)) == path and path.read_text() == text
    assert [p.name for p in site.iterdir()] == [launcher.PTH_NAME]
    assert launcher.uninstall_launcher(site) == path and not path.exists()
    assert launcher.uninstall_launcher(site) is None


# ---------------------------------------------------------------- launcher: real interpreters, as ray submit


def _venv_purelib(venv: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _make_venv(root: Path, with_project: bool) -> Path:
    """A throwaway venv (no pip: milliseconds) that sees this environment's packages, the project included,
    through a .pth that adds our site-packages as a site dir (so its own .pth files, e.g. the editable
    install's finder, run too). Its name sorts before the launcher's, as site processes .pth files sorted."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    if with_project:
        parent = sysconfig.get_paths()["purelib"]
        (_venv_purelib(venv) / "_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    return venv


@pytest.fixture(scope="module")
def launcher_venv(tmp_path_factory):
    """A venv in which `ardm install-launcher`'s default (this interpreter's site-packages) got the hook."""
    venv = _make_venv(tmp_path_factory.mktemp("launcher"), with_project=True)
    python = str(venv / "bin" / "python")
    out = subprocess.run([python, "-m", "orchestrator.launcher"], capture_output=True, text=True, check=True)
    pth = _venv_purelib(venv) / launcher.PTH_NAME
    assert pth.is_file() and str(pth) in out.stdout
    return python


@pytest.fixture
def head_home(tmp_path):
    """A stand-in for the head node's home directory, the working directory of `ray submit`'s command. Folders
    there named like our packages (a project mounted at ~/ardm, say) become namespace packages when the
    working directory is on sys.path, and their files shadow the editable install's modules: the sweep must
    not import them."""
    home = tmp_path / "home"
    for package in ("ardm", "orchestrator"):
        (home / package).mkdir(parents=True)
        (home / package / "config.py").write_text('raise ImportError("shadowed by the home directory")\n')
    return home


def _python(python: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([python, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_python_sweep_yaml_runs_the_sweep_dry_run(launcher_venv, head_home):
    """`ray submit cluster.yaml sweeps/demo.yaml -- --dry-run --set sweep.name=launch-test` on the head.

    Needs `ardm sweep --dry-run` and sweeps/demo.yaml (the lead's orchestrator/cli.py and config.py)."""
    copied = head_home / "demo.yaml"
    shutil.copy(DEMO_SWEEP, copied)  # the one file ray submit uploads
    result = _python(launcher_venv, str(copied), "--dry-run", "--set", "sweep.name=launch-test", cwd=head_home)
    assert result.returncode == 0, result.stderr
    assert "sweep 'launch-test', 2 trial(s)" in result.stdout
    assert "branching=256" in result.stdout and "branching=4" in result.stdout


def test_python_sweep_yaml_passes_on_the_exit_status(launcher_venv, head_home):
    """The sweep's exit status is the process's (running it inside site would always give 1)."""
    copied = head_home / "x.yml"
    copied.write_text("sweep:\n  name: x\n")
    result = _python(launcher_venv, str(copied), "--no-such-option", cwd=head_home)
    assert result.returncode == 2
    assert "usage: ardm" in result.stderr and "--no-such-option" in result.stderr  # argparse of orchestrator.cli


def test_yaml_without_sweep_section_runs_as_python(launcher_venv, tmp_path):
    plain = tmp_path / "config.yaml"
    plain.write_text("data: photos:8\nsweep_like:\n  sweep: 1\n")
    result = _python(launcher_venv, str(plain), cwd=tmp_path)
    assert result.returncode == 1 and "SyntaxError" in result.stderr


def test_other_programs_are_unaffected(launcher_venv, tmp_path):
    result = _python(launcher_venv, "-c", "print(1)", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "1\n", "")


def test_stale_launcher_without_the_project_is_silent(tmp_path):
    """`pip uninstall ardm` leaves the .pth behind: every interpreter must still start quietly."""
    venv = _make_venv(tmp_path, with_project=False)
    launcher.install_launcher(_venv_purelib(venv))
    python = str(venv / "bin" / "python")
    sweep = tmp_path / "x.yaml"
    sweep.write_text("sweep:\n  name: x\n")
    assert _python(python, "-c", "print(1)", cwd=tmp_path).stderr == ""
    result = _python(python, str(sweep), cwd=tmp_path)  # no hook any more: Python runs the YAML as a script
    assert result.returncode == 1 and "SyntaxError" in result.stderr and ".pth" not in result.stderr


# ---------------------------------------------------------------------------------------------- ardm submit


class FakeJobClient:
    """The parts of ray.job_submission.JobSubmissionClient that submit_sweep uses."""

    def __init__(self, final_status="SUCCEEDED", logs=("line 1\n", "line 2\n")):
        self.final_status, self.logs, self.submitted = final_status, logs, []

    def submit_job(self, *, entrypoint, runtime_env, metadata):
        work = Path(runtime_env["working_dir"])
        files = {p.name: p.read_text() for p in work.iterdir()}  # read now: the folder is temporary
        self.submitted.append({"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": metadata,
                               "files": files})
        return "raysubmit_fake"

    async def tail_job_logs(self, job_id):
        for chunk in self.logs:
            yield chunk

    def get_job_info(self, job_id):
        return argparse.Namespace(status=self.final_status, message="boom", driver_exit_code=3)


def test_submit_sweep_uploads_only_the_sweep_file(capsys):
    client = FakeJobClient()
    job = submit_sweep("127.0.0.1:8265", str(DEMO_SWEEP), ["train.steps=5", "sweep.name=a b"], client=client)
    assert job == "raysubmit_fake"
    (sub,) = client.submitted
    assert sub["files"] == {"demo.yaml": DEMO_SWEEP.read_text()}
    assert not Path(sub["runtime_env"]["working_dir"]).exists()
    assert shlex.split(sub["entrypoint"]) == ["ardm", "sweep", "demo.yaml", "--base-dir", "~", "--set",
                                              "train.steps=5", "--set", "sweep.name=a b"]
    out = capsys.readouterr().out
    assert "raysubmit_fake" in out
    # The job's working directory is temporary: a relative storage.path lies under the head's home.
    assert "results:         storage ~/runs/sweeps/a b, MLflow the head's $MLFLOW_TRACKING_URI" in out
    assert "ray job logs --follow --address http://127.0.0.1:8265 raysubmit_fake" in out


def test_sweep_entrypoint_flags():
    assert sweep_entrypoint("x.yaml", [], resume=True, dry_run=True) == \
        "ardm sweep x.yaml --base-dir '~' --resume --dry-run"


def test_submit_sweep_wait_follows_logs_and_reports_failure(capsys):
    assert submit_sweep("http://h:8265", str(DEMO_SWEEP), [], wait=True, client=FakeJobClient()) == "raysubmit_fake"
    assert "line 1\nline 2\n" in capsys.readouterr().out
    with pytest.raises(JobFailedError, match="FAILED.*exit code 3.*boom"):
        submit_sweep("http://h:8265", str(DEMO_SWEEP), [], wait=True, client=FakeJobClient("FAILED"))


def test_submit_sweep_refuses_files_that_are_not_sweeps(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: digits\n")
    client = FakeJobClient()
    with pytest.raises(SubmitError, match="run.yaml: not a sweep file"):
        submit_sweep("http://h:8265", str(config), [], client=client)
    with pytest.raises(SubmitError, match="missing.yaml: no such sweep file"):
        submit_sweep("http://h:8265", str(tmp_path / "missing.yaml"), [], client=client)
    assert client.submitted == []


def _submit_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ardm submit")
    add_submit_arguments(parser)
    return parser.parse_args(argv)


def test_run_submit_errors_are_one_line(tmp_path, capsys):
    assert run_submit(_submit_args(str(tmp_path / "nope.yaml"), str(DEMO_SWEEP))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ardm: error: ") and "nope.yaml" in err
    port = _free_port()  # nothing listens there
    assert run_submit(_submit_args(str(CLUSTER), str(DEMO_SWEEP), "--address", f"http://127.0.0.1:{port}")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "ardm forward" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HEAD_PORTS = ["--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
               "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port", "--object-manager-port",
               "--ray-client-server-port"]


def _dashboard_up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def local_ray_head():
    """A private single-node Ray with the dashboard's job server: `ray start --head --block` in a child process
    the test owns, every port chosen free (a second Ray on this machine holds the defaults, e.g. the dashboard
    agent's 52365) and its own --temp-dir (so its address file is not /tmp/ray's, which `ray.init()` elsewhere
    on this machine would pick up). Stopped by SIGINT to that process (its atexit handler ends the processes
    it started); never `ray stop`, which would stop every Ray instance of the machine."""
    ports = {flag: _free_port() for flag in _HEAD_PORTS}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's unix sockets live under it
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")  # `ardm` for the job
    command = [str(bin_dir / "ray"), "start", "--head", "--block", "--num-cpus=1", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp}",
               *(f"{flag}={port}" for flag, port in ports.items())]
    log = open(Path(temp) / "ray-start.log", "w")  # noqa: SIM115  closed in the finally below
    head = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        deadline = time.monotonic() + 120
        while not _dashboard_up(url):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local Ray head did not start:\n{(Path(temp) / 'ray-start.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        head.send_signal(signal.SIGINT)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_sweep_runs_a_dry_run_job_on_a_local_ray(local_ray_head, capsys):
    """A real job through Ray's job server: `ardm sweep demo.yaml --set ... --dry-run` from the uploaded
    working_dir. Needs `ardm sweep --dry-run` (the lead's CLI)."""
    job = submit_sweep(local_ray_head, str(DEMO_SWEEP), ["sweep.name=job test"], wait=True, dry_run=True)
    out = capsys.readouterr().out
    assert job.startswith("raysubmit_")
    assert "sweep 'job test', 2 trial(s)" in out and "branching=256" in out
