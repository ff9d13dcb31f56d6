"""`ardm submit cluster.yaml sweeps/x.yaml [--set KEY=VALUE ...]`: run a sweep on a Ray cluster as a Ray job.

The alternative to `ray submit cluster.yaml sweeps/x.yaml` (see orchestrator/launcher.py) through Ray's Job
Submission API: the sweep file alone is uploaded as the job's working_dir and the job's entrypoint is
`ardm sweep x.yaml --base-dir ~ --set ...`, run by the cluster's job server on the head node, where the
project is installed (cluster.yaml). The job server listens on the head's private address only: `ardm
submit` reaches it through an SSH tunnel it opens and closes itself (orchestrator/forward.py). The job
outlives the submitting laptop; `ray job logs --follow` reattaches (through `ardm forward cluster.yaml`).

Ray is imported only when a job is really submitted, so the CLI can add these arguments cheaply.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from orchestrator.exit_codes import FAILED, INTERRUPTED, OK, Ending, bad_input, run_command
from orchestrator.forward import (
    DASHBOARD_PORT,
    ForwardError,
    forwarded,
    free_local_port,
    head_login,
    private_address,
)
from orchestrator.launcher import is_sweep_file
from orchestrator.messages import one_line

# Where relative paths of a submitted sweep lie on the head: its home, as with `ray submit`.
HEAD_BASE_DIR = "~"


class SubmitError(Exception):
    """Bad input or an unreachable cluster: one line for the user (exit code 2)."""


class JobFailedError(Exception):
    """A job followed with wait=True ended in another state than SUCCEEDED."""

    def __init__(self, job_id: str, status: str, message: str | None = None, exit_code: int | None = None):
        self.job_id, self.status, self.message, self.exit_code = job_id, status, message, exit_code
        detail = f" (driver exit code {exit_code})" if exit_code is not None else ""
        super().__init__(f"job {job_id} ended {status}{detail}" + (f": {message}" if message else ""))


def _normalize_address(address: str) -> str:
    return address if "://" in address else f"http://{address}"


def check_sweep(sweep_file: str, overrides: list[str]) -> str:
    """Validate the sweep file here, so a malformed one fails before anything is uploaded; return where its
    results go, as seen on the head: the storage folder (a relative storage.path lies under the head's home,
    see sweep_entrypoint) and the MLflow tracking store."""
    from ardm.config import ConfigError
    from orchestrator.config import load_sweep

    try:
        cfg = load_sweep(sweep_file, overrides, base_dir=HEAD_BASE_DIR).base
    except ConfigError as err:
        raise SubmitError(str(err)) from err
    tracking = cfg.tracking.uri or "the head's $MLFLOW_TRACKING_URI (cluster.yaml: its MLflow server)"
    return f"storage {cfg.storage.path}/{cfg.sweep.name}, MLflow {tracking}"


def sweep_entrypoint(file_name: str, overrides: list[str], resume: bool = False, dry_run: bool = False) -> str:
    """The job's shell command: `ardm sweep FILE --base-dir ~ --set K=V ... [--resume] [--dry-run]`, each word
    shell-quoted. The job runs in a temporary working directory that Ray deletes: relative paths of the sweep
    are resolved against the head's home instead, as `ray submit` does."""
    words = ["ardm", "sweep", file_name, "--base-dir", HEAD_BASE_DIR]
    for override in overrides:
        words += ["--set", override]
    words += ["--resume"] * resume + ["--dry-run"] * dry_run
    return shlex.join(words)


def _job_client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as err:
        raise SubmitError(
            f"cannot reach Ray's job server at {address} ({one_line(err, 300)}); without --address, `ardm submit` "
            f"opens an SSH tunnel to the head itself (`ardm forward CLUSTER.yaml` keeps one open at "
            f"http://127.0.0.1:{DASHBOARD_PORT})") from err


def submit_sweep(address: str, sweep_file: str, overrides: list[str], wait: bool = False, *,
                 resume: bool = False, dry_run: bool = False, client: Any = None, agent_wait_s: float = 60.0,
                 follow_hint: str | None = None) -> str:
    """Submit `ardm sweep <sweep_file's name> --set ...` as a Ray job at `address`; return the job id.

    The job's working_dir holds only a copy of the sweep file. With wait=True the job's logs are printed
    until it ends, and JobFailedError is raised unless it SUCCEEDED. resume/dry_run: pass `--resume` /
    `--dry-run` to `ardm sweep` (a dry run validates the file on the cluster and lists its trials). `client`:
    a JobSubmissionClient (made for `address` when None). A job server whose node agent is not ready yet
    is asked again for up to `agent_wait_s` seconds. follow_hint: how to reach the job server later, printed
    with the follow-up commands when `address` is a tunnel that closes after this call.
    """
    path = Path(sweep_file)
    if not path.is_file():
        raise SubmitError(f"{sweep_file}: no such sweep file")
    if not is_sweep_file(path):
        raise SubmitError(f"{sweep_file}: not a sweep file (a .yaml/.yml file with a top-level 'sweep:' section)")
    results = check_sweep(sweep_file, list(overrides))
    address = _normalize_address(address)
    if client is None:
        client = _job_client(address)
    entrypoint = sweep_entrypoint(path.name, list(overrides), resume, dry_run)
    with tempfile.TemporaryDirectory(prefix="ardm-submit-") as work:
        shutil.copy2(path, Path(work) / path.name)
        deadline = time.monotonic() + agent_wait_s
        while True:
            try:
                job_id = client.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": work},
                                           metadata={"ardm_sweep_file": path.name})
                break
            except Exception as err:
                # Right after `ray up` the head's dashboard agent may not have registered yet: Ray answers
                # "No available agent to submit job, please try again later".
                if "try again later" in str(err) and time.monotonic() < deadline:
                    time.sleep(1.0)
                    continue
                raise SubmitError(f"{sweep_file}: the job server at {address} refused the job: "
                                  f"{one_line(err, 300)}") from err
    later = f"http://127.0.0.1:{DASHBOARD_PORT}" if follow_hint else address
    print(f"submitted {path.name} as Ray job {job_id}: {entrypoint}")
    print(f"  results:         {results}")
    if follow_hint:
        print(f"  first, in another terminal: {follow_hint}")
    print(f"  follow its logs: ray job logs --follow --address {later} {job_id}")
    print(f"  its status:      ray job status --address {later} {job_id}")
    print(f"  stop it:         ray job stop --address {later} {job_id}")
    if wait:
        wait_for_job(client, job_id)
    return job_id


def wait_for_job(client: Any, job_id: str, out=None) -> None:
    """Print the job's logs as they come until it ends; raise JobFailedError unless it SUCCEEDED."""
    import asyncio

    out = out or sys.stdout

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(_tail())
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception:  # the log stream broke; the job itself may still be fine: poll its status
        pass
    info = _wait_terminal(client, job_id)
    status = str(getattr(info.status, "value", info.status))
    if status != "SUCCEEDED":
        raise JobFailedError(job_id, status, getattr(info, "message", None), getattr(info, "driver_exit_code", None))


def _wait_terminal(client: Any, job_id: str, poll_s: float = 1.0) -> Any:
    while True:
        info = client.get_job_info(job_id)
        if str(getattr(info.status, "value", info.status)) in {"SUCCEEDED", "FAILED", "STOPPED"}:
            return info
        time.sleep(poll_s)


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `ardm submit CLUSTER SWEEP [--set ...] [--resume] [--dry-run] [--wait] [--address URL]`."""
    parser.add_argument("cluster", help="the Ray cluster launcher config the cluster was started with (cluster.yaml)")
    parser.add_argument("file", help="sweep file (see sweeps/); only this file is uploaded")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep field")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep from its storage")
    parser.add_argument("--dry-run", action="store_true",
                        help="submit a job that only validates the sweep on the cluster and lists its trials")
    parser.add_argument("--wait", action="store_true", help="print the job's logs until it ends; its status is ours")
    parser.add_argument("--address", help="a job server URL you reach yourself (e.g. http://127.0.0.1:8265 while "
                                          "`ardm forward cluster.yaml` runs) instead of the SSH tunnel to the head "
                                          "that ardm submit opens and closes itself")


# How `ardm submit` ends besides the common cases (orchestrator.exit_codes): a refused submission is bad
# input, a followed job that failed is a failure, and Ctrl-C stops only the following.
SUBMIT_ENDINGS = (
    bad_input(SubmitError, ForwardError),
    Ending((JobFailedError,), FAILED, "{err}"),
    Ending((KeyboardInterrupt,), INTERRUPTED, "stopped following; the job keeps running on the cluster"),
)


def run_submit(args: argparse.Namespace) -> int:
    """`ardm submit`: 0 when submitted (or, with --wait, when the job SUCCEEDED); 2 on bad input; 1 if it failed."""
    return run_command(_submit, args, SUBMIT_ENDINGS)


def _submit(args: argparse.Namespace) -> int:
    options = {"wait": args.wait, "resume": args.resume, "dry_run": args.dry_run}
    if args.address:
        submit_sweep(args.address, args.file, args.set, **options)
        return OK
    check_sweep(args.file, args.set)  # a malformed sweep fails before the head is looked for
    login = head_login(args.cluster)
    port = free_local_port()
    with forwarded(login, private_address(login), {port: DASHBOARD_PORT}):
        submit_sweep(f"http://127.0.0.1:{port}", args.file, args.set, **options,
                     follow_hint=f"ardm forward {args.cluster}")
    return OK
