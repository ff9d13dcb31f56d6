"""SSH port-forwards to the services on a cluster's head node, opened and closed by the project itself.

cluster.yaml binds Ray's dashboard (which is also its job server, able to run any code) and the MLflow
server to the head's private address, so nothing outside the cluster's network reaches them. A laptop
reaches them the way `ray dashboard cluster.yaml` does: through `ssh -L`, with the user and key the
cluster launcher uses, to the head's public address; the far end of the tunnel is the head's private
address, which the head itself reports (`hostname -I`, as cluster.yaml's start commands bind it).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.exit_codes import FAILED, OK, bad_input, run_command
from orchestrator.messages import one_line

DASHBOARD_PORT = 8265
MLFLOW_PORT = 5000
# The same command cluster.yaml's head_start_ray_commands use to pick the address they bind.
PRIVATE_ADDRESS_COMMAND = 'hostname -I | cut -d" " -f1'
# Like Ray's own SSH runner: the head's host key changes with every new instance behind the same address.
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
               "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5", "-o", "ConnectTimeout=20",
               "-o", "LogLevel=ERROR")


class ForwardError(Exception):
    """The head cannot be found or the tunnel does not come up: one line for the user (exit code 2)."""


@dataclass(frozen=True)
class HeadLogin:
    """How `ray up`'s SSH reaches the head: user@host with an optional private key file."""

    user: str
    host: str
    key: str | None

    def ssh(self, *args: str) -> list[str]:
        """The `ssh` command line with `args` (options before the destination, then a remote command)."""
        key = ["-i", str(Path(self.key).expanduser())] if self.key else []
        return ["ssh", *SSH_OPTIONS, *key, *args]


def head_login(cluster_yaml: str) -> HeadLogin:
    """The head node's SSH login for the cluster that `ray up cluster_yaml` started.

    The key is the one Ray's bootstrap resolved (cached by `ray up`; for AWS, the ray-autoscaler_* key it
    created) unless auth.ssh_private_key names one. Raises ForwardError naming the file when it is missing
    or no head node runs.
    """
    path = Path(cluster_yaml)
    if not path.is_file():
        raise ForwardError(f"{cluster_yaml}: no such cluster config file")
    try:
        from ray.autoscaler._private.commands import _bootstrap_config
        from ray.autoscaler.sdk import get_head_node_ip

        host = get_head_node_ip(str(path))
        auth = _bootstrap_config(yaml.safe_load(path.read_text()))["auth"]
    except (Exception, SystemExit) as err:  # provider errors, no running head, Ray's cli_logger.abort
        raise ForwardError(f"{cluster_yaml}: cannot find the cluster's head node ({one_line(err, 300)}); "
                           f"is the cluster up (`ray up {cluster_yaml}`)?") from err
    if not host:
        raise ForwardError(f"{cluster_yaml}: the cluster's head node has no IP address yet; is it up?")
    return HeadLogin(user=auth["ssh_user"], host=host, key=auth.get("ssh_private_key"))


def private_address(login: HeadLogin, timeout_s: float = 60.0) -> str:
    """The head's private address, as the head reports it (the one its services bind)."""
    command = login.ssh(f"{login.user}@{login.host}", PRIVATE_ADDRESS_COMMAND)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ForwardError(f"ssh to the head {login.user}@{login.host} failed: {one_line(err, 300)}") from err
    address = done.stdout.strip()
    if done.returncode != 0 or not address:
        why = one_line(done.stderr, 300) if done.stderr.strip() else f"exit code {done.returncode}"
        raise ForwardError(f"ssh to the head {login.user}@{login.host} failed: {why}")
    return address


def free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def forwarded(login: HeadLogin, remote_host: str, ports: dict[int, int],
              timeout_s: float = 60.0) -> Iterator[subprocess.Popen]:
    """Keep `ssh -N -L local:remote_host:remote ...` open for each {local: remote} port while the block runs.

    Waits until every local port accepts connections; raises ForwardError if ssh exits first or after
    `timeout_s`. Yields the ssh process. The tunnel is closed (SIGTERM, then SIGKILL) when the block ends,
    however it ends.
    """
    forwards = [arg for local, remote in ports.items() for arg in ("-L", f"{local}:{remote_host}:{remote}")]
    command = login.ssh("-N", *forwards, f"{login.user}@{login.host}")
    try:
        tunnel = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
    except OSError as err:
        raise ForwardError(f"cannot run ssh for the tunnel to {login.host}: {one_line(err, 300)}") from err
    try:
        deadline = time.monotonic() + timeout_s
        while not all(_listening(local) for local in ports):
            if tunnel.poll() is not None:
                why = one_line(tunnel.stderr.read(), 300) if tunnel.stderr else ""
                raise ForwardError(f"the SSH tunnel to {login.user}@{login.host} closed "
                                   f"(exit code {tunnel.returncode}){': ' + why if why else ''}")
            if time.monotonic() > deadline:
                raise ForwardError(f"the SSH tunnel to {login.user}@{login.host} did not open in {timeout_s:.0f} s")
            time.sleep(0.2)
        yield tunnel
    finally:
        tunnel.terminate()
        try:
            tunnel.wait(10)
        except subprocess.TimeoutExpired:
            tunnel.kill()
            tunnel.wait()


def add_forward_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `ardm forward CLUSTER [--dashboard-port N] [--mlflow-port N]`."""
    parser.add_argument("cluster", help="the Ray cluster launcher config the cluster was started with (cluster.yaml)")
    parser.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT,
                        help="local port for Ray's dashboard and job server (default: %(default)s)")
    parser.add_argument("--mlflow-port", type=int, default=MLFLOW_PORT,
                        help="local port for the head's MLflow server and UI (default: %(default)s)")


def run_forward(args: argparse.Namespace) -> int:
    """`ardm forward`: hold the tunnels to the head's dashboard and MLflow server until Ctrl-C (exit 0);
    2 when the head or the tunnel cannot be reached, 1 when the tunnel drops."""
    return run_command(_forward, args, (bad_input(ForwardError),))


def _forward(args: argparse.Namespace) -> int:
    login = head_login(args.cluster)
    try:
        with forwarded(login, private_address(login),
                       {args.dashboard_port: DASHBOARD_PORT, args.mlflow_port: MLFLOW_PORT}) as tunnel:
            print(f"Ray dashboard and job server: http://127.0.0.1:{args.dashboard_port}")
            print(f"MLflow UI and tracking server: http://127.0.0.1:{args.mlflow_port}")
            print(f"  export RAY_ADDRESS=http://127.0.0.1:{args.dashboard_port} "
                  f"MLFLOW_TRACKING_URI=http://127.0.0.1:{args.mlflow_port}")
            print("Ctrl-C closes the tunnel.", flush=True)
            code = tunnel.wait()
    except KeyboardInterrupt:
        return OK
    print(f"ardm: the SSH tunnel to {login.host} closed (exit code {code})", file=sys.stderr)
    return FAILED
