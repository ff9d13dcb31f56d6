"""Post-processing on Ray: results are reused on a repeat, new budgets only measure themselves,
and bad input fails in one line before anything starts."""

import pyarrow.parquet as pq
import pytest

from ardm.budgets import COLUMNS
from ardm.tables import StepTable
from orchestrator.cli import main
from orchestrator.config import CompressionSection, PostprocessSection
from orchestrator.postprocess import postprocess_checkpoint
from tests.support.reference import checkpoint_of

pytestmark = pytest.mark.slow


def test_repeat_reuses_results_and_new_budgets_measure_only_themselves(ray_cluster, trained_digits, tmp_path):
    model, _ = trained_digits
    ckpt = str(checkpoint_of(model, tmp_path / "c.pt"))
    settings = {"table_samples_per_step": 2, "table_ranges": 2, "steps_per_call": 8, "max_images": 24,
                "sample_grid": 4,
                "compression": CompressionSection(budgets=(8,), max_images=24, orders=2, order_images=16)}
    first = postprocess_checkpoint(ckpt, "digits", str(tmp_path / "pp"), PostprocessSection(budgets=(2, 8), **settings))
    work = next(p for p in (tmp_path / "pp").iterdir() if p.name != "artifacts")
    # Everything but the merged table (re-merged from its parts each time) is computed once.
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and p.name != "step_table.parquet"}
    # The full budget is always measured (every budget's excess is over it): asking for it adds nothing.
    assert {p.name for p in work.rglob("budget-*.json")} == {"budget-2.json", "budget-8.json", "budget-64.json"}
    again = postprocess_checkpoint(ckpt, "digits", str(tmp_path / "pp"),
                                   PostprocessSection(budgets=(2, 8, "4/stage", "full"), **settings))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing recomputed
    new = {p for p in work.rglob("*") if p.is_file() and p.name != "step_table.parquet"} - set(stamps)
    assert {p.name for p in new} == {"budget-4.json", "samples_budget_4.png"}
    # The table comes from training images, never the measured test images, and its file says so.
    table = StepTable.load(str(work / "tables" / "step_table.parquet"))
    assert table.metadata["split"] == "train" and table.metadata["images"] == "all"
    assert pq.read_table(again.folder / "budget_bpd.parquet").column_names == list(COLUMNS)
    # Each budget's excess over all steps, on the same images: paired, so far tighter than either error.
    measured, excess = again.curves["bpd_measured"], again.curves["bpd_excess"]
    assert excess[8] == pytest.approx(measured[8] - measured[64]) and excess[64] == 0
    assert again.metrics["num_stages"] == 1 and again.metrics["png_bpd"] > 0 and again.metrics["webp_lossless_bpd"] > 0
    # MLflow charts draw each curve against network calls: one point per budget measured.
    assert sorted(measured) == sorted(again.curves["bpd_naive"]) == [2, 4, 8, 64]
    assert again.curves["bpd_joint"] == {}  # one stage: no joint allocation
    assert again.metrics == first.metrics
    for key, curve in first.curves.items():  # the first run's points, reused as they were
        assert all(again.curves[key][calls] == value for calls, value in curve.items()), key
    assert again.curves["bpd_predicted"][64] == pytest.approx(again.metrics["full_elbo_bpd"])
    # The real coded size sits above the measured cost of the same policy by the coder's flush of
    # about 34 bits per image (0.53 bpd at D = 64), give or take the noise of different orders.
    row = next(r for r in again.curve.rows if r["calls"] == 8 and r["policy"] == "optimal")
    gap = again.curves["bpd_compressed"][8] - measured[8]
    assert abs(gap - 0.53) < 0.25 + 4 * row["measured_stderr"]
    # Other table settings are another computation, not a mix with the old parts.
    other = postprocess_checkpoint(ckpt, "digits", str(tmp_path / "pp"),
                                   PostprocessSection(budgets=(8,), **{**settings, "table_samples_per_step": 3}))
    assert len([p for p in (tmp_path / "pp").iterdir() if p.name != "artifacts"]) == 2
    assert other.curve.full_elbo != first.curve.full_elbo


@pytest.mark.parametrize("budgets, message", [("0", "budgets: each must be an integer >= 1"),
                                              ("65", "[65] outside 1..64 for this model"),
                                              ("65/stage", "budget 65/stage: more than D=64 calls per stage")])
def test_bad_budgets_fail_in_one_line_before_work(trained_digits, tmp_path, capsys, budgets, message):
    ckpt = str(checkpoint_of(trained_digits[0], tmp_path / "c.pt"))
    assert main(["postprocess", ckpt, "--budgets", budgets, "--data", "digits", "--out", str(tmp_path / "pp")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "pp").exists()


@pytest.mark.parametrize("budgets", ["4,x", "x/stage", "2.5/stage", "0/stage"])
def test_unparsable_budgets_are_one_line(capsys, budgets):
    assert main(["postprocess", "run", "--budgets", budgets]) == 2
    err = capsys.readouterr().err
    assert "each must be an integer >= 1, 'N/stage' or 'full'" in err and len(err.strip().splitlines()) == 1
