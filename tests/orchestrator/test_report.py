"""The sweep report from MLflow runs: rows equal the runs' metrics, failed and unfinished trials are
shown, and the HTML renders in headless Chromium with its table and plot."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from orchestrator.cli import main
from orchestrator.report import build_report
from orchestrator.tracking import SweepTracker, default_tracking_uri

TRIALS = {
    # name: (status, metrics, failure reason)
    "branching=256_a": ("FINISHED", {"total_steps": 192, "full_elbo_bpd": 5.4, "full_elbo_stderr": 0.05,
                                     "wall_time_s": 120.0, "bpd_budget_4_measured": 7.1,
                                     "bpd_budget_4_measured_stderr": 0.1, "bpd_budget_20_measured": 5.9,
                                     "bpd_budget_20_measured_stderr": 0.06, "bpd_budget_192_measured": 5.41,
                                     "bpd_budget_192_measured_stderr": 0.05}, None),
    "branching=4_b": ("FINISHED", {"total_steps": 768, "num_stages": 3, "full_elbo_bpd": 4.9, "full_elbo_stderr": 0.07,
                                   "wall_time_s": 130.0, "bpd_budget_4_measured": 6.2,
                                   "bpd_budget_4_measured_stderr": 0.08, "bpd_budget_20_measured": 5.3,
                                   "bpd_budget_20_measured_stderr": 0.07, "bpd_budget_768_measured": 4.93,
                                   "bpd_budget_768_measured_stderr": 0.07,
                                   "bpd_budget_4_naive": 7.9, "bpd_budget_4_naive_stderr": 0.1,
                                   "bpd_budget_20_naive": 5.9, "bpd_budget_20_naive_stderr": 0.08,
                                   "bpd_budget_20_excess": 0.37, "bpd_budget_20_excess_stderr": 0.0123,
                                   "bpd_budget_20_predicted": 5.25, "bpd_budget_20_predicted_stderr": 0.02,
                                   "compressed_bpd_20": 5.61, "png_bpd": 7.25, "webp_lossless_bpd": 6.5}, None),
    "branching=2_c": ("FAILED", {}, "RuntimeError: CUDA out of memory"),
    "branching=8_d": ("RUNNING", {"train_bpd": 6.0}, None),
}


CURVE = {"measured": "bpd_measured", "naive": "bpd_naive", "predicted": "bpd_predicted", "excess": "bpd_excess"}
BUDGET = re.compile(r"^bpd_budget_(\d+)_(measured|naive|predicted|excess)$")


def log_trial(tracker: SweepTracker, run_id: str, metrics: dict, folder: Path) -> None:
    """Log TRIALS' flat metrics as post-processing does: curves against calls, their standard errors
    in the curve table artifact (postprocess/budget_bpd.parquet), the rest as one-value metrics."""
    curves, stderr, scalars = {}, {}, {}
    for key, value in metrics.items():
        if found := BUDGET.match(key.removesuffix("_stderr")):
            calls, kind = int(found[1]), found[2]
            if key.endswith("_stderr"):
                stderr.setdefault(calls, {})[kind] = value
            else:
                curves.setdefault(CURVE[kind], {})[calls] = value
        elif key.startswith("compressed_bpd_"):
            curves.setdefault("bpd_compressed", {})[int(key.rsplit("_", 1)[1])] = value
        else:
            scalars[key] = value
    tracker.log_metrics(run_id, scalars)
    tracker.log_curves(run_id, curves)
    rows = [{"budget": calls, "policy": "optimal", "calls": calls,
             **{f"{kind}_stderr": errors.get(kind) for kind in ("measured", "predicted", "excess")}}
            for calls, errors in stderr.items()]
    rows += [{"budget": calls, "policy": "naive", "calls": calls, "measured_stderr": errors["naive"],
              "predicted_stderr": None, "excess_stderr": None} for calls, errors in stderr.items() if "naive" in errors]
    if rows:
        (folder / "postprocess").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), folder / "postprocess" / "budget_bpd.parquet")
        tracker.log_artifact(run_id, folder / "postprocess" / "budget_bpd.parquet", "postprocess")


@pytest.fixture
def sweep(tmp_path):
    tracker = SweepTracker(default_tracking_uri(tmp_path), "report-test")
    parent = tracker.start_sweep("report-test", {"sweep": {"name": "report-test"}})
    for name, (status, metrics, reason) in TRIALS.items():
        run_id = tracker.trial_run(parent, name, {"model": {"branching": int(name.split("=")[1][:-2])}})
        tracker.set_tags(run_id, {"ardm.configuration": name[:-2]})
        log_trial(tracker, run_id, metrics, tmp_path / name)
        if status != "RUNNING":
            tracker.end_run(run_id, status, reason)
    return tracker, parent


def test_report_rows_equal_the_runs_metrics_and_show_every_trial(sweep, tmp_path):
    tracker, parent = sweep
    report = build_report(tracker, parent, tmp_path / "report")
    assert report.budgets == [4, 20]  # each model's own full budget is its "all steps" column
    rows = {r["trial"]: r for r in pq.read_table(tmp_path / "report" / "report.parquet").to_pylist()}
    assert sorted(rows) == sorted(TRIALS)
    for name, (_, metrics, _) in TRIALS.items():
        if "total_steps" in metrics:
            row, total = rows[name], int(metrics["total_steps"])
            assert row["bpd_budget_4"] == metrics["bpd_budget_4_measured"]
            assert row["bpd_budget_20_stderr"] == metrics["bpd_budget_20_measured_stderr"]
            assert row["bpd_all_steps"] == metrics[f"bpd_budget_{total}_measured"]
            assert row["full_elbo_bpd"] == metrics["full_elbo_bpd"] and row["train_time_s"] == metrics["wall_time_s"]
    assert rows["branching=2_c"]["status"] == "failed" and "out of memory" in rows["branching=2_c"]["reason"]
    assert rows["branching=8_d"]["status"] == "unfinished" and rows["branching=8_d"]["bpd_budget_4"] is None
    text = (tmp_path / "report" / "report.md").read_text()
    assert "failed: RuntimeError: CUDA out of memory" in text and "| branching=8 | unfinished |" in text
    # One every-step value per trial (measured on the test images); the table's ELBO is in the detail.
    assert "| branching=4 | finished | 6.200 ± 0.080 | 5.300 ± 0.070 | 4.930 ± 0.070 | 768 |" in text
    assert "| 20 | 20 (3 stages) | 5.300 ± 0.070 | 0.3700 ± 0.0123 | 5.250 ± 0.020 | 5.900 ± 0.080 | — |" in text
    assert "| branching=4 | 20 | 20 (3 stages) | 5.610 | 5.300 ± 0.070 | 7.250 | 6.500 |" in text
    assert "paper" not in text  # not a CIFAR-10 sweep
    # Naive 5.9 at 20 calls and 4.93 at 768: 5.3 is 62% of the way down (log x), at 20 * 38.4**0.619 calls.
    assert "the naive policy needs ≈16 calls for the optimal policy's 6.200 at 4 (3.9x); ≈191 calls for the " \
           "optimal policy's 5.300 at 20 (9.5x)." in text
    assert "branching=256: the naive policy" not in text  # no naive measurements: no claim
    assert "branching=4: smallest budget within 1% / 5% of its every-step 4.930 bpd (768 calls): 1%: 768 calls, " \
           "5%: 768 calls." in text  # 5.3 is 7.5% above 4.93
    assert "Best configuration per budget: 4 calls: branching=4 (6.200); 20 calls: branching=4 (5.300)." in text
    logged = {a.path for a in tracker.client.list_artifacts(parent, "report")}
    assert logged == {f"report/{n}" for n in ("report.html", "report.md", "report.parquet", "budget_bpd.png")}


def test_report_cli_and_errors(sweep, tmp_path, capsys):
    uri = default_tracking_uri(tmp_path)
    assert main(["report", "report-test", "--tracking-uri", uri, "--out", str(tmp_path / "cli")]) == 0
    assert str(tmp_path / "cli" / "report.html") in capsys.readouterr().out
    tracker = SweepTracker(uri, "report-test")
    parent = tracker.client.search_runs([tracker.experiment_id], "tags.`ardm.role` = 'sweep'")[0].info.run_id
    assert not tracker.client.list_artifacts(parent, "report")  # not logged unless asked
    # By default it writes where the sweep wrote it: <storage>/<sweep>/report, from the sweep run's params.
    tracker.client.log_param(parent, "storage.path", str(tmp_path / "storage"))
    assert main(["report", "report-test", "--tracking-uri", uri, "--log"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "storage" / "report-test" / "report" / "report.html") in out
    assert f"logged to the sweep's MLflow run {parent}" in out and tracker.client.list_artifacts(parent, "report")
    assert main(["report", "nope", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "no experiment named 'nope'" in err and len(err.strip().splitlines()) == 1


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("ARDM_SKIP_BROWSER") == "1":
            pytest.skip("ARDM_SKIP_BROWSER=1 and no chromium")
        pytest.fail("chromium not found: `make test` installs Debian's chromium (or set ARDM_SKIP_BROWSER=1)")
    return found


def _chromium_run(args: list[str], profile) -> subprocess.CompletedProcess:
    # Without the background-networking flags Chromium keeps trying to reach Google on a closed network.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1400,1300"]
    return subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=120)


def test_html_report_renders_table_and_plot_in_headless_chromium(sweep, tmp_path):
    tracker, parent = sweep
    report = build_report(tracker, parent, tmp_path / "report", log=False)
    url = report.html.as_uri()
    dom = _chromium_run(["--dump-dom", url], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<tr class=") == len(TRIALS) and 'id="plot"' in dom.stdout
    # The rendered page holds the runs' numbers: the paired excess, the compression beside PNG/WebP, findings.
    assert "<td>0.3700 ± 0.0123</td>" in dom.stdout and "<td>5.610</td><td>5.300 ± 0.070</td>" in dom.stdout
    assert '<ul id="findings">' in dom.stdout and "(9.5x)" in dom.stdout
    shot = tmp_path / "shot.png"
    run = _chromium_run([f"--screenshot={shot}", url], tmp_path / "profile-shot")
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)

    def count(rgb: tuple[int, int, int], tolerance: int = 12) -> int:
        return int((np.abs(pixels - rgb).max(1) <= tolerance).sum())

    # The plot drew the two finished trials' curves (rows 0 and 2: matplotlib's colours C0 and C2),
    # and the table's failed and unfinished rows got their backgrounds: both really rendered.
    assert count((0x1F, 0x77, 0xB4)) > 200 and count((0x2C, 0xA0, 0x2C)) > 200
    assert count((0xFD, 0xE2, 0xE2)) > 2000 and count((0xFF, 0xF4, 0xD6)) > 2000
