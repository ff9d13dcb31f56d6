"""Fault: two drivers on one sweep. While one process holds the sweep's lock (as a running driver
does, from its checks until it ends), a second `ardm sweep FILE --resume` is refused with one line
naming the holder and exit 2, before it writes or starts anything; once the holder is SIGKILLed,
the lock can be taken at once.

The holder here is a small process that takes the lock through the driver's own function and then
waits; the refused driver is the real CLI.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.lock import SweepBusyError, acquire, lock_path

from sweep_files import TINY, write_sweep

HOLD = ("import sys; from orchestrator.lock import acquire; lock = acquire(sys.argv[1], sys.argv[2]); "
        "print('held', flush=True); sys.stdin.read()")


def _hold(storage: str, name: str) -> subprocess.Popen:
    """A process holding sweep `name`'s lock (until its stdin closes or it is killed)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, storage, name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline()  # returns early, empty, if the holder dies instead
    assert line == "held\n", f"the holder exited with {holder.wait()} before taking the lock"
    return holder


def test_second_driver_is_refused_and_a_killed_holder_frees_the_lock(tmp_path, capfd):
    name = "busy"
    path = write_sweep(tmp_path, name, TINY, f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = str(tmp_path / "storage")
    holder = _hold(storage, name)
    try:
        with pytest.raises(SweepBusyError, match=f"pid {holder.pid} on {socket.gethostname()}"):
            acquire(storage, name)
        capfd.readouterr()
        assert main(["sweep", str(path), "--resume"]) == 2
        err = capfd.readouterr().err
        assert err.count("\n") == 1, err
        assert err.startswith(f"ardm: error: sweep {name!r} is being run by pid {holder.pid} on "
                              f"{socket.gethostname()} since "), err
        assert str(lock_path(storage, name)) in err and "wait for it or stop it" in err
        assert sorted(p.name for p in (tmp_path / "storage" / name).iterdir()) == ["driver.lock"], "wrote"
    finally:
        holder.kill()  # SIGKILL: no clean exit, the kernel drops the lock
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    with acquire(storage, name) as lock:  # at once: acquire never waits
        assert lock.held
        assert f'"pid": {os.getpid()}' in lock.path.read_text()


def test_object_storage_locks_on_this_machine(tmp_path, monkeypatch):
    """s3:// has no lock primitive: the lock file is local, keyed by the storage URI and the sweep."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert lock_path("s3://bucket/sweeps", "a") == lock_path("s3://bucket/sweeps/", "a")
    assert lock_path("s3://bucket/sweeps", "a") != lock_path("s3://other/sweeps", "a")
    assert lock_path("s3://bucket/sweeps", "a").parent == Path(tmp_path, ".cache/ardm/locks")
    holder = _hold("s3://bucket/sweeps", "a")
    try:
        with pytest.raises(SweepBusyError, match=f"pid {holder.pid}"):
            acquire("s3://bucket/sweeps", "a")
        with acquire("s3://bucket/sweeps", "b") as other:  # another sweep on the same storage
            assert other.held
    finally:
        holder.kill()
        holder.wait()
    with acquire("s3://bucket/sweeps", "a") as lock:
        assert lock.held
