"""Fault: the sweep's driver killed (SIGKILL) while a trial's step table is half computed: one
table-range part is on storage, the other still running. `ardm sweep FILE --resume` reuses the finished
part (the file is not rewritten) and computes only the missing one; the merged table is the one an
undisturbed one-pass computation gives, bit for bit.

The two ranges are of very unequal size (steps_per_call 60 on the 64 steps of a K = 17 model: steps 0-59
in one task, 60-63 in the other), so the small part is on storage long before the large one is: the
driver is killed as soon as one part is there. With it go its trial and the trial's tasks, so the
other range is never finished. (A SIGINT would not do here: Tune lets a running trial go on for
seconds while it stops, long enough to finish its table.)
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ardm.checkpoint import load_model
from ardm.tables import StepTable, estimate_step_table, table_images
from orchestrator import names
from orchestrator.cli import main
from tests.support.sweep_files import TINY, sweep_runs, write_sweep

pytestmark = pytest.mark.slow

STEPS_PER_CALL, SAMPLES = 60, 48  # 60 + 4 steps of 48 draws: the large range takes seconds, the small one a tenth
ONE_TRIAL = {
    **TINY,
    "model": {**TINY["model"], "branching": 17},
    "train": {**TINY["train"], "steps": 4, "checkpoint_every": 2},
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
    "failure": {"train_max_failures": 0, "trial_max_failures": 0},
    "postprocess": {**TINY["postprocess"], "budgets": [3, "full"], "table_ranges": 2,
                    "steps_per_call": STEPS_PER_CALL, "table_samples_per_step": SAMPLES, "sample_grid": 0},
    "tracking": {"system_metrics_interval_s": 0},  # not this test's concern: one background thread fewer
}
POLL_S = 0.02  # the pace of the test's look at the sweep's files, not a wait for anything


def _parts(root: Path) -> dict[str, Path]:
    """The step-table parts on the sweep's storage, by file name."""
    return {p.name: p for p in (root / "postprocess").glob("*/*/tables/parts/steps-*.parquet")}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_reuses_the_finished_table_part_and_computes_the_other(ray_cluster, mlflow_server, tmp_path):
    path = write_sweep(tmp_path, "half-table", ONE_TRIAL, mlflow_server)
    root = tmp_path / "storage" / "half-table"
    with (tmp_path / "driver.log").open("w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "sweep", str(path)], stdout=log,
                                  stderr=subprocess.STDOUT, env={**os.environ, "RAY_ADDRESS": ray_cluster.address})
        try:
            while not (parts := _parts(root)) and driver.poll() is None:
                time.sleep(POLL_S)
            driver.kill()
            driver.wait()
        finally:
            if driver.poll() is None:
                driver.kill()
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-3000:]
    assert len(parts) == 1, f"parts on storage when the driver was killed: {sorted(parts)}"
    assert _parts(root) == parts, "the other range was finished after all"
    [(finished, part)] = parts.items()
    kept = (part.stat().st_mtime_ns, _digest(part))

    assert main(["sweep", str(path), "--resume"]) == 0
    _, _, (run,) = sweep_runs(mlflow_server, "half-table")
    assert run.info.status == "FINISHED" and run.data.metrics["bpd_measured"] > 0
    after = _parts(root)
    assert len(after) == 2 and (after[finished].stat().st_mtime_ns, _digest(after[finished])) == kept, (
        "the finished part was computed again")
    # The merged table is what one undisturbed pass over every step gives with the same draws.
    merged = StepTable.load(str(after[finished].parents[1] / "step_table.parquet"))
    model = load_model(run.data.tags[names.CHECKPOINT_TAG], ema=True)
    images, _ = table_images(run.data.tags[names.DATA_TAG], "train", 0, 0)
    reference = estimate_step_table(model, images, SAMPLES, steps_per_call=STEPS_PER_CALL, seed=0)
    assert np.array_equal(merged.nll_bits, reference.nll_bits)
    assert np.array_equal(merged.stderr_bits, reference.stderr_bits, equal_nan=True)
