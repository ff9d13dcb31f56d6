"""Fault: a full disk. A checkpoint, a step-table part or a report written where there is no room
ends with one line naming the file and the free space (through the CLI: "ardm: error: ...", exit 2;
in a Ray task: the trial's failure reason); the previous file stays whole and no temporary is left;
once there is room again, `ardm train` resumes from the previous checkpoint and finishes.

The disk fills for real, per process: the writer runs with RLIMIT_FSIZE (no file may grow past
ROOM bytes) and SIGXFSZ ignored, so the kernel fails the write with EFBIG, as it fails one on a
full disk with ENOSPC or over a quota with EDQUOT; ardm.storage treats the three alike. (A small
filesystem of its own would need root to mount.) Each limited writer is a fresh process forked
from a forkserver that imported the CLI, so the limit dies with it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ardm.checkpoint import load_checkpoint
from ardm.storage import OutOfSpaceError, free_space
from ardm.tables import StepTable
from orchestrator.cli import main
from orchestrator.tracking import SweepTracker, default_tracking_uri
from tests.support.fresh_cli import run_cli, with_file_size_limit

ROOT = Path(__file__).resolve().parents[2]
# Every file may hold 4 KiB: a run's config.yaml fits; a checkpoint (MBs), a table part of TABLE_ROWS
# random floats and a report's Parquet file do not.
ROOM = 4096
TABLE_ROWS = 2000
TRAIN = ["train", str(ROOT / "configs" / "photos8.yaml"), "--quiet", *[a for s in (
    "data=digits", "model.preset=cpu-tiny", "model.branching=4", "train.batch_size=8", "train.checkpoint_every=3",
    "eval.max_images=8", "eval.sample_grid=0") for a in ("--set", s)]]
UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


@pytest.fixture(scope="module")
def fresh() -> Iterator[multiprocessing.pool.Pool]:
    """Runs each call in a new process forked from a forkserver that imported the CLI (and torch):
    a limit set in one call ends with its process."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["orchestrator.cli"])  # an installed module: the forkserver lacks the tests' path
    with context.Pool(1, maxtasksperchild=1) as pool:
        yield pool


def _out_of_space_line(path: Path) -> re.Pattern[str]:
    """What OutOfSpaceError says about `path` under RLIMIT_FSIZE: the errno's text, the free space
    (captured: value and unit) and the folder it was measured in."""
    return re.compile(rf"{re.escape(str(path))}: out of space \(File too large; (\d+(?:\.\d)?) (B|KiB|MiB|GiB|TiB) "
                      rf"free in {re.escape(str(path.parent))}\)")


def _check_free_space(found: re.Match[str], folder: Path) -> None:
    """The stated free space is the folder's filesystem's (to its rounding, give or take what other
    processes on this machine wrote since)."""
    stated = float(found[1]) * UNITS[found[2]]
    assert abs(stated - shutil.disk_usage(folder).free) <= 0.05 * stated + UNITS[found[2]] / 10, found[0]


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_checkpoint_without_room_keeps_the_previous_one_and_resume_finishes(
    tmp_path: Path, fresh: multiprocessing.pool.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    train = [*TRAIN, "--set", f"output={out}"]
    assert main([*train, "--set", "train.steps=3"]) == 0  # the earlier run: its checkpoint is step 3's
    capsys.readouterr()
    checkpoint = out / "checkpoint.pt"
    before = _snapshot(out)
    # Nine steps: it resumes from step 3, and its checkpoint of step 6 finds no room.
    code, printed, err, _ = fresh.apply(with_file_size_limit, (ROOM, run_cli, ([*train, "--set", "train.steps=9"],
                                                                              str(tmp_path))))
    assert code == 2 and printed == ""
    resumed = f"resumed from step 3 of 9 (checkpoint {checkpoint})"
    lines = err.splitlines()
    assert len(lines) == 2 and lines[0] == resumed, err
    found = _out_of_space_line(checkpoint).fullmatch(lines[1].removeprefix("ardm: error: "))
    assert lines[1].startswith("ardm: error: ") and found, err
    _check_free_space(found, out)
    # The previous checkpoint is whole and the failed one's temporary gone; the limited run rewrote
    # only its config (now saying 9 steps).
    after = _snapshot(out)
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if k != "config.yaml"} == {k: v for k, v in before.items()
                                                                      if k != "config.yaml"}
    assert load_checkpoint(checkpoint)["step"] == 3
    # Room again: the same command takes up at step 3 and finishes.
    assert main([*train, "--set", "train.steps=9"]) == 0
    assert capsys.readouterr().err == resumed + "\n"
    assert load_checkpoint(checkpoint)["step"] == 9
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


def _table(seed: int) -> StepTable:
    """A step table of TABLE_ROWS random steps (random floats do not compress)."""
    rng = np.random.default_rng(seed)
    return StepTable(stage=np.zeros(TABLE_ROWS, np.int32), t=np.arange(TABLE_ROWS, dtype=np.int32),
                     nll_bits=rng.random(TABLE_ROWS), stderr_bits=rng.random(TABLE_ROWS),
                     n=np.full(TABLE_ROWS, 2, np.int32),
                     metadata={"num_stages": "1", "num_variables": str(TABLE_ROWS), "seed": str(seed)})


def test_a_table_part_without_room_keeps_the_previous_one(tmp_path: Path, fresh: multiprocessing.pool.Pool) -> None:
    """A part as orchestrator.tables' Ray task writes it (StepTable.save through pyarrow's filesystem,
    whose errors carry the errno); the trial's failure reason is the same line."""
    from ray.exceptions import RayTaskError

    from orchestrator.trial import failure_reason

    part = tmp_path / "tables" / "parts" / f"steps-000000-{TABLE_ROWS:06d}.parquet"
    _table(1).save(str(part))
    before = _snapshot(part.parent)
    with pytest.raises(OutOfSpaceError) as caught:
        fresh.apply(with_file_size_limit, (ROOM, _table(2).save, (str(part),)))
    found = _out_of_space_line(part).fullmatch(str(caught.value))
    assert found, caught.value
    _check_free_space(found, part.parent)
    assert _snapshot(part.parent) == before
    assert StepTable.load(str(part)).metadata["seed"] == "1"
    in_task = RayTaskError("_table_range", "Traceback (most recent call last): ...", caught.value)
    assert failure_reason(in_task.as_instanceof_cause()) == f"OutOfSpaceError: {caught.value}"


def test_a_report_without_room_keeps_the_previous_one(tmp_path: Path, fresh: multiprocessing.pool.Pool,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    uri = default_tracking_uri(tmp_path)
    tracker = SweepTracker(uri, "full-disk")
    parent = tracker.start_sweep("full-disk", {"sweep": {"name": "full-disk"}})
    run_id = tracker.trial_run(parent, "branching=4_a", {"model": {"branching": 4}})
    tracker.log_metrics(run_id, {"test_bpd": 4.2, "test_bpd_stderr": 0.1, "total_steps": 192.0})
    tracker.end_run(run_id, "FINISHED")
    folder = tmp_path / "report"
    report = ["report", "full-disk", "--tracking-uri", uri, "--out", str(folder)]
    assert main(report) == 0
    capsys.readouterr()
    before = _snapshot(folder)
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # MLflow's download bars: not this test's lines
    code, printed, err, _ = fresh.apply(with_file_size_limit, (ROOM, run_cli, (report, str(tmp_path), quiet)))
    assert code == 2 and printed == ""
    lines = err.splitlines()
    found = _out_of_space_line(folder / "report.parquet").fullmatch(lines[0].removeprefix("ardm: error: "))
    assert len(lines) == 1 and lines[0].startswith("ardm: error: ") and found, err
    _check_free_space(found, folder)
    assert _snapshot(folder) == before


@pytest.mark.parametrize(("free", "stated"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                               (int(41.24 * 2**30), "41.2 GiB"), (3 * 2**40, "3.0 TiB")])
def test_free_space_is_stated_in_binary_units(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free: int,
                                              stated: str) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: SimpleNamespace(free=free))
    assert free_space(tmp_path / "missing" / "file") == f"{stated} free in {tmp_path}"
