"""This test process's own descendants by the name they show, read from /proc (Linux).

Fault tests find the Ray worker processes to kill this way rather than through Ray's state API: that
answers with a delay, and its calls time out on a loaded machine; and only this test run's processes
are candidates, not those of another Ray on the same machine.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def title(pid: int) -> str:
    """The process's name as it shows it (Ray workers rename themselves, e.g. `ray::_table_range`), or ""
    once it is gone."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip()
    return ""


def stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the process name: [state, parent pid, ...]; [] once it is gone."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return []


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1 and pid != ancestor:
        fields = stat(pid)
        pid = int(fields[1]) if fields else 0
    return pid == ancestor


def own_processes(prefix: str) -> Iterator[int]:
    """The pids of this process's descendants whose title starts with `prefix`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and title(int(entry.name)).startswith(prefix) and descends_from(int(entry.name),
                                                                                                 os.getpid()):
            yield int(entry.name)
