"""Helper of tests/faults/test_storage.py, run as a script (not a test): writers SIGKILLed in the middle of a write.

    python tests/support/killed_writer.py FOLDER KILLS SEED

For each kind of file in KINDS, KILLS times: fork a child that writes the file over and over
through the library's own writer, announcing on a pipe where each write starts (".") and ends
("!"); wait for a random number of starts, SIGKILL the child at a random moment of the write
that follows (the time a write takes is measured first), then fork a reader that opens what is
there as the library's readers do. One JSON line per kill on stdout:

    {"kind", "kill", "first": the first version this child wrote, "started": the writes it started,
     "found": the version the reader found (null: no file), "error": the reader's error or null,
     "listing": the names in the destination's folder}

Children are forked from this process, which imports torch and pyarrow once but never runs
either (their thread pools would not survive a fork), so a kill costs milliseconds, not an import.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import torch

import ardm.data.parquet
import ardm.tables
from ardm.checkpoint import load_checkpoint, save_checkpoint
from ardm.data import ImageDataset, load_parquet_split, write_parquet_shards
from ardm.storage import filesystem
from ardm.tables import StepTable

CHECKPOINT_FLOATS = 2**21  # 8 MiB, written and fsynced: long enough to be hit mid-way
TABLE_ROWS = 200_000  # random floats do not compress: about 5 MiB of Parquet
SHARD_IMAGES, SHARD_ROWS = {"train": 4000, "test": 400}, 100  # 44 shards and a manifest
PIECE = 2**18  # bytes SlowStorage writes at a time
START, END = b".", b"!"  # announcements of a write


class SlowStorage:
    """Stand-in for a pyarrow filesystem on slow storage (NFS, an object store), offering what
    ardm.storage.write_atomic calls: each file goes out in 256 KiB pieces 2 ms apart, and its
    start and end are announced on a pipe. A local disk writes a whole table in milliseconds,
    between longer spells of encoding: too short a window to aim at. The atomic write is the library's."""

    def __init__(self, fs: pafs.FileSystem, announce: int) -> None:
        self.fs, self.announce = fs, announce

    def create_dir(self, path: str, recursive: bool = True) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    @contextmanager
    def open_output_stream(self, path: str) -> Iterator[SlowStorage]:
        with self.fs.open_output_stream(path) as self.out:
            yield self

    def write(self, payload: bytes | pa.Buffer) -> None:
        os.write(self.announce, START)
        view = memoryview(payload)
        for start in range(0, len(view), PIECE):
            self.out.write(view[start : start + PIECE])
            time.sleep(0.002)
        os.write(self.announce, END)


def _slow_filesystem(uri: str, error: type[Exception] = OSError, *, announce: int) -> tuple[SlowStorage, str]:
    fs, path = filesystem(uri, error)
    return SlowStorage(fs, announce), path


def write_checkpoint(dest: Path, version: int, announce: int) -> None:
    weights = torch.full((CHECKPOINT_FLOATS,), float(version))
    os.write(announce, START)  # torch.save writes into the temporary file from its first byte on
    save_checkpoint({"step": version, "model": {"w": weights}}, dest)
    os.write(announce, END)


def read_checkpoint(dest: Path) -> int | None:
    if not dest.exists():
        return None
    payload = load_checkpoint(dest)
    if not bool((payload["model"]["w"] == payload["step"]).all()):
        raise ValueError(f"checkpoint of step {payload['step']} holds other weights")
    return int(payload["step"])


def write_table(dest: Path, version: int, announce: int) -> None:
    ardm.tables.filesystem = functools.partial(_slow_filesystem, announce=announce)  # in this child only
    rng = np.random.default_rng(version)
    nll = rng.random(TABLE_ROWS)
    nll[0] = version
    table = StepTable(stage=np.zeros(TABLE_ROWS, np.int32), t=np.arange(TABLE_ROWS, dtype=np.int32), nll_bits=nll,
                      stderr_bits=rng.random(TABLE_ROWS), n=np.full(TABLE_ROWS, 2, np.int32),
                      metadata={"num_stages": "1", "num_variables": str(TABLE_ROWS), "version": str(version)})
    table.save(str(dest))


def read_table(dest: Path) -> int | None:
    if not dest.exists():
        return None
    table = StepTable.load(str(dest))
    version = int(table.metadata["version"])
    if not (table.is_complete() and table.nll_bits[0] == version):
        raise ValueError(f"table version {version} holds other rows")
    return version


def shard_images(split: str) -> np.ndarray:
    """The images every conversion writes (the same each time: a folder is converted once)."""
    rng = np.random.default_rng(SHARD_IMAGES[split])
    return rng.integers(0, 256, (SHARD_IMAGES[split], 3, 16, 16), dtype=np.uint8)


def write_shards(dest: Path, version: int, announce: int) -> None:
    ardm.data.parquet.filesystem = functools.partial(_slow_filesystem, announce=announce)  # in this child only
    train, test = (ImageDataset(shard_images(split), 256, "random") for split in ("train", "test"))
    write_parquet_shards(train, test, dest.parent, rows_per_shard=SHARD_ROWS)


def read_shards(dest: Path) -> int | None:
    if not dest.exists():  # no manifest: the folder is not a dataset yet (sweep.prepare_data converts it afresh)
        return None
    for split in ("train", "test"):
        if not np.array_equal(load_parquet_split(dest.parent, split).images, shard_images(split)):
            raise ValueError(f"{split} split differs from what was written")
    return 1


@dataclass(frozen=True)
class Kind:
    """dest: the file a reader trusts; fresh_folder: each kill writes into a new folder (a dataset is
    converted once) instead of overwriting the same file; waits: the range of write starts (files)
    to wait for before the kill."""

    dest: str
    fresh_folder: bool
    write: Callable[[Path, int, int], None]
    read: Callable[[Path], int | None]
    waits: tuple[int, int]


KINDS = {
    "checkpoint": Kind("checkpoint.pt", False, write_checkpoint, read_checkpoint, (1, 3)),
    "table": Kind("step_table.parquet", False, write_table, read_table, (1, 3)),
    # 45 files per conversion: kills land in the first conversion or in a rewrite of a complete folder
    "shards": Kind("manifest.json", True, write_shards, read_shards, (1, 90)),
}


def _in_child(body: Callable[[], object]) -> int:
    """Run body() in a forked child that exits when it returns; the child's pid."""
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    return pid


def _writer(kind: Kind, dest: Path, first: int, announce: int) -> None:
    """The child: write versions first, first + 1, ... until killed."""
    version = first
    while True:
        kind.write(dest, version, announce)
        version += 1


def _read_in_child(kind: Kind, dest: Path) -> tuple[int | None, str | None]:
    """(version found, error) from a reader in a fresh child, so that this process stays fork-safe."""
    receive, send = os.pipe()

    def body() -> None:
        try:
            answer = {"found": kind.read(dest), "error": None}
        except Exception as err:
            answer = {"found": None, "error": "".join(traceback.format_exception_only(err)).strip()}
        os.write(send, json.dumps(answer).encode())

    pid = _in_child(body)
    os.close(send)
    with os.fdopen(receive, "rb") as pipe:
        answer = json.loads(pipe.read() or b'{"found": null, "error": "the reader died"}')
    os.waitpid(pid, 0)
    return answer["found"], answer["error"]


def _start_writer(kind: Kind, dest: Path, first: int) -> tuple[int, int]:
    """(pid, read end of its announcement pipe) of a new writer child."""
    receive, announce = os.pipe()
    pid = _in_child(functools.partial(_writer, kind, dest, first, announce))
    os.close(announce)
    return pid, receive


def _kill(pid: int, receive: int) -> bytes:
    """SIGKILL a writer; the announcements it made that were not read yet."""
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with os.fdopen(receive, "rb") as pipe:
        return pipe.read()


def _read_announcement(receive: int, name: str) -> bytes:
    byte = os.read(receive, 1)
    if not byte:
        raise RuntimeError(f"the {name} writer died on its own")
    return byte


def _write_time(name: str, folder: Path) -> float:
    """Seconds one write of this kind takes here: the mean of two, timed from START to END."""
    kind = KINDS[name]
    pid, receive = _start_writer(kind, folder / kind.dest, 0)
    times: list[float] = []
    began = None
    while len(times) < 2:
        byte = _read_announcement(receive, name)
        if byte == START:
            began = time.perf_counter()
        elif began is not None:
            times.append(time.perf_counter() - began)
    _kill(pid, receive)
    return sum(times) / len(times)


def run(name: str, folder: Path, kills: int, rng: random.Random) -> None:
    kind = KINDS[name]
    duration = _write_time(name, folder / "calibration" / name)
    for kill in range(kills):
        dest = folder / name / (f"{kill:03d}" if kind.fresh_folder else "") / kind.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        first = (kill + 1) * 1000
        pid, receive = _start_writer(kind, dest, first)
        waits, started = rng.randint(*kind.waits), 0
        while started < waits:
            started += _read_announcement(receive, name) == START
        time.sleep(rng.uniform(0, 1.2 * duration))  # mostly within the write that just started
        started += _kill(pid, receive).count(START)
        found, error = _read_in_child(kind, dest)
        line = {"kind": name, "kill": kill, "first": first, "started": started, "found": found, "error": error,
                "listing": sorted(os.listdir(dest.parent))}
        print(json.dumps(line), flush=True)


def main() -> None:
    folder, kills, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    for name in KINDS:
        run(name, folder, kills, rng)


if __name__ == "__main__":
    main()
