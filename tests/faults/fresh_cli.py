"""Helper of test_bad_input.py (not a test): `ardm ARGV` run in the calling process, meant to be a
fresh one (a fork of a forkserver that imported the CLI but never touched Ray).

It lives outside the test module so that a fork imports only this, not the test module's imports.
"""

from __future__ import annotations

import os
import sys
import tempfile

from orchestrator.cli import main


def run_cli(argv: list[str], cwd: str, env: dict[str, str] | None = None) -> tuple[int, str, str, bool]:
    """Run `ardm ARGV` in `cwd` with `env` added to the environment: (exit code, stdout, stderr,
    whether Ray was started). Output is captured at the file descriptors, as pytest's capfd would.
    MLFLOW_TRACKING_URI comes only from `env`, as the suite's conftest keeps it out of every test."""
    os.chdir(cwd)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(env or {})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
        out.seek(0)
        err.seek(0)
        printed, complained = out.read(), err.read()
    ray = sys.modules.get("ray")
    started = ray is not None and ray.is_initialized()
    if started:
        ray.shutdown()  # a pool process ends without atexit handlers: leave no Ray instance behind
    return code, printed, complained, started
