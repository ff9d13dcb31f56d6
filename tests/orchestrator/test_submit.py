"""`ardm submit` through Ray's Job Submission API (orchestrator/submit.py)."""

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from orchestrator.submit import (
    JobFailedError,
    SubmitError,
    add_submit_arguments,
    run_submit,
    submit_sweep,
    sweep_entrypoint,
)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster.yaml"
DEMO_SWEEP = ROOT / "sweeps" / "demo.yaml"  # 2 trials (branching 256 and 4)


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


@pytest.mark.ray  # a Ray head of its own (`ray start --head`), not the session cluster
def test_submit_sweep_runs_a_dry_run_job_on_a_local_ray(local_ray_head, capsys):
    """A real job through Ray's job server: `ardm sweep demo.yaml --set ... --dry-run` from the uploaded
    working_dir. Needs `ardm sweep --dry-run` (the lead's CLI)."""
    job = submit_sweep(local_ray_head, str(DEMO_SWEEP), ["sweep.name=job test"], wait=True, dry_run=True)
    out = capsys.readouterr().out
    assert job.startswith("raysubmit_")
    assert "sweep 'job test', 2 trial(s)" in out and "branching=256" in out
