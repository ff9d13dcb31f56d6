"""Fault: two drivers on one sweep. While one process holds the sweep's lock (as a running driver
does, from its checks until it ends), a second `ardm sweep FILE --resume` is refused with one line
naming the holder and exit 2, before it writes or starts anything; once the holder is SIGKILLed,
the lock can be taken at once.

In the first test the holder is a small process that takes the lock through the driver's own
function and then waits; in the second (slow: it needs the Ray cluster) it is a real `ardm sweep`
driver, SIGKILLed as soon as the second one has been refused. The refused driver is the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.layout import lock_path
from orchestrator.lock import SweepBusyError, acquire
from tests.support.sweep_files import TINY, write_sweep

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


def _held_by(path: Path, pid: int) -> bool:
    """Whether the lock file names `pid` as its holder (written once the lock is taken)."""
    try:
        return json.loads(path.read_text() or "{}").get("pid") == pid
    except (OSError, ValueError):
        return False


@pytest.mark.slow
def test_a_running_driver_refuses_a_second_and_its_sigkill_frees_the_sweep(ray_cluster, tmp_path, capfd):
    name = "two-drivers"
    # Long enough that the driver is still running when the second one comes (it is killed long before the end).
    long = {**TINY, "model": {**TINY["model"], "branching": 4}, "postprocess": {"enabled": False},
            "train": {**TINY["train"], "steps": 100000, "checkpoint_every": 50000}}
    path = write_sweep(tmp_path, name, long, f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = yaml.safe_load(path.read_text())["storage"]["path"]
    lock = lock_path(storage, name)
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(path)], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
    try:
        deadline = time.monotonic() + 300  # a safety net only: the driver takes the lock within seconds
        while not _held_by(lock, driver.pid):
            assert driver.poll() is None, f"the driver exited: {(tmp_path / 'driver.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the driver never took the sweep's lock"
            time.sleep(0.2)
        capfd.readouterr()
        assert main(["sweep", str(path), "--resume"]) == 2
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and f"is being run by pid {driver.pid} on {socket.gethostname()}" in err, err
    finally:
        driver.kill()
        driver.wait()
        log.close()
    with acquire(storage, name) as taken:  # at once, though the killed driver never released it
        assert taken.held
