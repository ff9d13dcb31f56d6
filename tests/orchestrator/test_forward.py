"""`ardm submit` and `ardm forward` reach the head's private services through an SSH tunnel they open and
close themselves. This machine has no sshd, so a fake `ssh` on PATH records its arguments, answers the
head's private address, and holds the local ends of `-L` forwards open as ssh does."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import forward, submit
from orchestrator.cli import main

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster.yaml"
DEMO_SWEEP = ROOT / "sweeps" / "demo.yaml"

FAKE_SSH = """#!{python}
import json, os, signal, socket, sys
log = os.environ["FAKE_SSH_LOG"]
args = sys.argv[1:]
with open(log, "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_SSH_FAIL"):
    sys.stderr.write("ubuntu@203.0.113.7: Permission denied (publickey).\\n")
    sys.exit(255)
if "-N" not in args:  # a remote command: the head's private address
    print("10.0.0.5")
    sys.exit(0)
listeners = []
for flag, spec in zip(args, args[1:]):
    if flag == "-L":
        s = socket.socket()
        s.bind(("127.0.0.1", int(spec.split(":")[0])))
        s.listen()
        listeners.append(s)

def closed(*_):
    with open(log, "a") as f:
        f.write(json.dumps("closed") + "\\n")
    sys.exit(0)

signal.signal(signal.SIGTERM, closed)
while True:
    signal.pause()
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    """A fake `ssh` first on PATH and a head found at 203.0.113.7 with Ray's bootstrapped login; returns a
    function that reads the recorded calls (argument lists, and "closed" when a tunnel was terminated)."""
    import ray.autoscaler._private.commands as commands
    import ray.autoscaler.sdk

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH.format(python=sys.executable))
    ssh.chmod(0o755)
    log = tmp_path / "ssh.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setattr(ray.autoscaler.sdk, "get_head_node_ip", lambda path: "203.0.113.7")
    monkeypatch.setattr(commands, "_bootstrap_config",
                        lambda config, no_config_cache=False: {"auth": {"ssh_user": "ubuntu",
                                                                        "ssh_private_key": "~/.ssh/ray.pem"}})
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class RecordingClient:
    """The parts of Ray's JobSubmissionClient that submit_sweep uses; records the address it was made for."""

    addresses: list[str] = []

    def __init__(self, address: str):
        self.addresses.append(address)

    def submit_job(self, *, entrypoint, runtime_env, metadata):
        return "raysubmit_tunnel"


def _submit(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    submit.add_submit_arguments(parser)
    return submit.run_submit(parser.parse_args(argv))


def test_submit_opens_and_closes_its_own_tunnel(fake_ssh, monkeypatch, capsys):
    RecordingClient.addresses = []
    monkeypatch.setattr(submit, "_job_client", RecordingClient)
    assert _submit(str(CLUSTER), str(DEMO_SWEEP), "--set", "train.steps=5") == 0
    query, tunnel, closed = fake_ssh()
    key = str(Path("~/.ssh/ray.pem").expanduser())
    # The head's private address, asked over SSH with the launcher's user and key ...
    assert query[-2:] == ["ubuntu@203.0.113.7", forward.PRIVATE_ADDRESS_COMMAND]
    assert query[query.index("-i") + 1] == key
    # ... is the far end of the tunnel; the job server is reached at the tunnel's local end ...
    assert tunnel[tunnel.index("-i") + 1] == key and tunnel[-1] == "ubuntu@203.0.113.7" and "-N" in tunnel
    local, host, remote = tunnel[tunnel.index("-L") + 1].split(":")
    assert (host, remote) == ("10.0.0.5", "8265")
    assert RecordingClient.addresses == [f"http://127.0.0.1:{local}"]
    # ... and the tunnel is closed once the job is submitted.
    assert closed == "closed"
    out = capsys.readouterr().out
    assert "raysubmit_tunnel" in out and f"ardm forward {CLUSTER}" in out
    assert "results:         storage ~/runs/sweeps/demo" in out


def test_submit_without_a_tunnel_is_one_line(fake_ssh, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SSH_FAIL", "1")
    assert _submit(str(CLUSTER), str(DEMO_SWEEP)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ubuntu@203.0.113.7" in err and "Permission denied" in err


def test_submit_refuses_a_malformed_sweep_before_looking_for_the_head(fake_ssh, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO_SWEEP.read_text().replace("storage:", "storage:\n  nope: 1"))
    assert _submit(str(CLUSTER), str(bad)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml" in err and "storage.nope" in err
    assert fake_ssh() == []


def test_forward_holds_both_tunnels_until_interrupted(fake_ssh, tmp_path):
    """`ardm forward` in its own process: both services forwarded, the tunnel closed on Ctrl-C, exit 0."""
    dash, ui = forward.free_local_port(), forward.free_local_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ("import ray.autoscaler.sdk, ray.autoscaler._private.commands as c, sys\n"
              "ray.autoscaler.sdk.get_head_node_ip = lambda path: '203.0.113.7'\n"
              "c._bootstrap_config = lambda config, no_config_cache=False: {'auth': {'ssh_user': 'ubuntu'}}\n"
              "from orchestrator.cli import main\n"
              f"sys.exit(main(['forward', {str(CLUSTER)!r}, '--dashboard-port', '{dash}', '--mlflow-port', '{ui}']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]  # the URLs are printed once the tunnel is up
        assert f"http://127.0.0.1:{dash}" in lines[0] and f"http://127.0.0.1:{ui}" in lines[1]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        proc.kill()
    _query, tunnel, closed = fake_ssh()
    forwards = [tunnel[i + 1] for i, arg in enumerate(tunnel) if arg == "-L"]
    assert forwards == [f"{dash}:10.0.0.5:8265", f"{ui}:10.0.0.5:5000"]
    assert "-i" not in tunnel  # no key configured: ssh's own defaults
    assert closed == "closed"


def test_forward_without_a_cluster_file_is_one_line(tmp_path, capsys):
    assert main(["forward", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yaml: no such cluster config file" in err


def test_tunnel_that_never_opens_is_refused(fake_ssh, monkeypatch):
    """ssh that neither listens nor exits (a hung connection) is stopped after the timeout, with one line."""
    login = forward.HeadLogin("ubuntu", "203.0.113.7", None)
    monkeypatch.setattr(forward.HeadLogin, "ssh", lambda self, *args: [sys.executable, "-c",
                                                                       "import time; time.sleep(600)"])
    with pytest.raises(forward.ForwardError, match="did not open in 1 s"), \
            forward.forwarded(login, "10.0.0.5", {forward.free_local_port(): 8265}, timeout_s=1.0):
        pass
