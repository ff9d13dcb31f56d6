"""Helper of tests/faults/test_bad_input.py and test_full_disk.py (not a test): `ardm ARGV` run in the calling
process, meant to be a fresh one (a fork of a forkserver that imported the CLI but never touched Ray),
and a file-size limit for such a process.

It lives outside the test modules so that a fork imports only this, not the test modules' imports.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

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


def with_file_size_limit(max_bytes: int, function: Callable[..., Any], args: tuple) -> Any:
    """function(*args) with no file growing past `max_bytes` in this process (RLIMIT_FSIZE): a write
    beyond it fails with EFBIG, as one on a full disk fails with ENOSPC. SIGXFSZ is ignored, or the
    kernel would kill the process instead. Only for a process of its own: the limit stays."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return function(*args)
