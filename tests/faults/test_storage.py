"""Fault: a process killed (SIGKILL) while it writes a checkpoint, a step table or Parquet shards.

Checkpoints (ardm.checkpoint.save_checkpoint), step tables and their parts (ardm.tables.StepTable.save,
through ardm.storage.write_atomic) and dataset shards are written under a temporary name and renamed,
so whatever moment a writer dies at, a reader finds the previous complete version or nothing, never
a truncated file; only dot-prefixed temporaries are left, and no reader picks them up.

tests/support/killed_writer.py does the killing in one subprocess (it forks the writers, so torch is imported once);
these tests check what it saw after each kill, and what the folders hold at the end.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ardm.checkpoint import load_checkpoint, save_checkpoint
from ardm.data import DataError, load_parquet_split
from ardm.data.parquet import read_manifest
from ardm.tables import StepTable
from tests.support.killed_writer import KINDS, TABLE_ROWS, shard_images

KILLS = 12
ROOT = Path(__file__).resolve().parents[2]
KILLED_WRITER = ROOT / "tests" / "support" / "killed_writer.py"


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict]]]:
    """(folder, each kind's kill reports) of one run of killed_writer.py."""
    folder = tmp_path_factory.mktemp("killed")
    done = subprocess.run([sys.executable, str(KILLED_WRITER), str(folder), str(KILLS), "0"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    reports: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for line in done.stdout.splitlines():
        report = json.loads(line)
        reports[report["kind"]].append(report)
    assert all(len(r) == KILLS for r in reports.values())
    return folder, reports


def _temporary(dest: str) -> re.Pattern[str]:
    """The names write_atomic and save_checkpoint give a temporary of `dest`: dot-prefixed, .tmp."""
    return re.compile(rf"\.{re.escape(dest)}\.\w+\.tmp")


@pytest.mark.parametrize("kind", ["checkpoint", "table"])
def test_a_killed_overwrite_leaves_the_previous_complete_version(killed, kind: str) -> None:
    """Each kill interrupts a child writing versions first, first + 1, ...: afterwards the file holds
    the last version that child finished (the one before the write it died in, or that write's own
    if it had just been renamed), or, when the child died in its first write, what was there before."""
    _, reports = killed
    dest, temporary = KINDS[kind].dest, _temporary(KINDS[kind].dest)
    previous, seen, interrupted, progressed = None, set(), 0, 0
    for r in reports[kind]:
        assert r["error"] is None, r
        last_started = r["first"] + r["started"] - 1
        allowed = {last_started, last_started - 1 if r["started"] > 1 else previous}
        assert r["found"] in allowed, r
        leftovers = set(r["listing"]) - {dest}
        assert all(temporary.fullmatch(name) for name in leftovers), r["listing"]
        interrupted += bool(leftovers - seen)  # a new temporary: this kill hit a write in progress
        progressed += r["found"] is not None and r["found"] >= r["first"]
        previous, seen = r["found"], seen | leftovers
    # The faults were real (writes died half done) and the writers made progress between them.
    assert interrupted >= 2 and progressed >= 2


def test_a_killed_conversion_leaves_no_manifest_or_a_complete_dataset(killed) -> None:
    """A dataset folder is a dataset once its manifest is there, and the manifest is written last:
    killed mid-conversion, the folder has no manifest (and a sweep converts it afresh); killed while
    rewriting a converted folder, every shard still matches the manifest."""
    folder, reports = killed
    temporary = re.compile(r"\.(train|test)-\d{5}\.parquet\.\w+\.tmp")
    outcomes = set()
    for r in reports["shards"]:
        assert r["error"] is None, r
        shards = [n for n in r["listing"] if re.fullmatch(r"(train|test)-\d{5}\.parquet", n)]
        others = set(r["listing"]) - set(shards) - {"manifest.json"}
        assert all(temporary.fullmatch(name) for name in others), r["listing"]
        if r["found"] is None:
            assert "manifest.json" not in r["listing"]
            with pytest.raises(DataError, match="no manifest"):
                read_manifest(folder / "shards" / f"{r['kill']:03d}")
            outcomes.add("no manifest")
        else:
            assert r["found"] == 1 and len(shards) == 44
            outcomes.add("complete")
    assert outcomes == {"no manifest", "complete"}


def test_readers_never_pick_up_temporaries(killed) -> None:
    """The folders as the kills left them, temporaries included (some of them complete files that
    were never renamed), read in this process by the library's readers and by pyarrow's folder reader."""
    folder, reports = killed
    checkpoint = folder / "checkpoint" / "checkpoint.pt"
    assert any(_temporary("checkpoint.pt").fullmatch(p.name) for p in checkpoint.parent.iterdir())
    assert load_checkpoint(checkpoint)["step"] == reports["checkpoint"][-1]["found"]
    tables = folder / "table"
    assert any(_temporary("step_table.parquet").fullmatch(p.name) for p in tables.iterdir())
    # A folder of Parquet files read as one dataset (as parts folders can be): temporaries are skipped.
    table = pq.read_table(tables)
    assert table.num_rows == TABLE_ROWS
    assert table.column("nll_bits")[0].as_py() == reports["table"][-1]["found"]
    complete = [r for r in reports["shards"] if r["found"] == 1 and len(r["listing"]) > 45]
    assert complete, "no converted folder kept a temporary beside its shards"
    shards = folder / "shards" / f"{complete[0]['kill']:03d}"
    for split in ("train", "test"):
        assert np.array_equal(load_parquet_split(shards, split).images, shard_images(split))


def test_atomic_writes_give_the_permissions_of_any_new_file(tmp_path: Path) -> None:
    """The temporary name must not make the file private: on shared storage (NFS, EFS) other
    users' processes read checkpoints and tables too."""
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    mode = stat.S_IMODE(plain.stat().st_mode)
    checkpoint = save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    table = StepTable(*(np.zeros(1, np.int32) for _ in range(5)), metadata={"num_stages": "1", "num_variables": "1"})
    table.save(str(tmp_path / "step_table.parquet"))
    assert stat.S_IMODE(checkpoint.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "step_table.parquet").stat().st_mode) == mode
