"""One driver per sweep: a lock on a file in the sweep's storage, held for as long as the driver runs.

The lock is a POSIX record lock (`fcntl.lockf`) on `<storage>/<sweep>/driver.lock`: local disks
support it, and so does NFS (NFSv4 natively, NFSv3 through lockd; `flock` is only emulated with
these same locks on NFS). The kernel (or the NFS server, once the client's lease lapses) drops it
when its process ends, SIGKILL included, so a killed driver never blocks a later `--resume`; the
file itself stays behind and only tells who held the lock last.

Object storage (s3://, gs://, ...) has no lock primitive. For such storage the lock file lives on
this machine, in ~/.cache/ardm/locks/, named after the storage URI and the sweep (where either lock
file is: orchestrator.layout.lock_path): two drivers on one machine are refused as on a shared disk,
but two machines driving one sweep on object storage are not protected from each other.

POSIX locks belong to a process, not to a file descriptor: any close of the file by the holding
process releases them. The holder therefore opens the file once and keeps it open until release.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
import warnings
from pathlib import Path

from orchestrator.layout import lock_path


class SweepBusyError(RuntimeError):
    """Another driver holds the sweep's lock (bad input to the CLI: one line, exit 2)."""


def _describe(holder: dict) -> str:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(since)) if isinstance(since, int | float) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {when}"


class SweepLock:
    """The held lock of one sweep; `release()` (or leaving the `with` block) frees it."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the process's POSIX locks on the file

    def __enter__(self) -> SweepLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(storage: str, sweep: str) -> SweepLock:
    """Take sweep `sweep`'s lock at once, or raise SweepBusyError naming its holder.

    Storage that refuses locks (an NFS mount without lockd, say) gives a warning and an unheld lock:
    the sweep runs, unprotected, rather than not at all."""
    path = lock_path(storage, sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EAGAIN):
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except (OSError, ValueError):
                holder = {}
            os.close(fd)
            raise SweepBusyError(f"sweep {sweep!r} is being run by {_describe(holder)} (lock {path}); "
                                 "wait for it or stop it") from None
        os.close(fd)
        warnings.warn(f"{path}: cannot lock ({err.strerror}); nothing keeps a second driver off sweep {sweep!r}",
                      stacklevel=2)
        return SweepLock(path, None)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": int(time.time())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
    os.fsync(fd)
    return SweepLock(path, fd)
