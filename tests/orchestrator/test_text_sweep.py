"""Text through the orchestrator: the text sweep files load and fit, and the text demo sweep runs on a
real two-node local Ray cluster against a real `mlflow server`, saying bits per character."""

from pathlib import Path

import pytest

from ardm.config import build
from ardm.data.text import ALPHABET
from orchestrator import names
from orchestrator.config import SweepConfig, check_budgets_fit, load_sweep, resolve
from tests.support.submitted_sweep import NAME
from tests.support.sweep_files import sweep_runs

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def test_text_sweep_files_load_and_their_budgets_fit():
    """sweeps/text8.yaml: the paper's setup (sequences of 250, K = 27, OA), budgets 5 ... 250 calls;
    sweeps/text-demo.yaml: two configurations (OA and b = 3) on the embedded corpus, budgets 5 ... full."""
    paper = load_sweep(SWEEPS / "text8.yaml")
    assert paper.base.data.spec.startswith("text8:") and "length=250" in paper.base.data.spec
    check_budgets_fit(paper, (1, 1, 250), 27)
    assert paper.base.postprocess.resolve_budgets(1, 250) == [5, 10, 20, 50, 100, 200, 250]
    demo = load_sweep(SWEEPS / "text-demo.yaml")
    assert demo.base.data.spec.startswith("pydoc") and demo.base.model.preset == "cpu-text"
    check_budgets_fit(demo, (1, 1, 64), 27)
    upscale = build(SweepConfig, resolve(demo.raw, {("model", "branching"): 3}))
    assert upscale.postprocess.resolve_budgets(3, 3 * 64) == [5, 10, 20, 40, 192]
    (space,) = demo.spaces.values()
    assert (space.kind, space.values) == ("grid", (27, 3))


@pytest.mark.slow
def test_text_demo_sweep_reports_bits_per_character(submitted_text_sweep, tmp_path):
    """The demo sweep file with fewer steps, sequences and samples, and only its upscaling trial (b = 3:
    three stages over the [MASK]-token transformer), submitted as `ray submit` runs it
    (tests/support/submitted_sweep.py): the trial finishes, its run says bits per character, its budget
    curve runs 5 ... all steps, its samples are text, and so is the report."""
    out = submitted_text_sweep.driver.stdout
    assert submitted_text_sweep.driver.returncode == 0, out[-3000:]
    assert " bpc\n" in out and " bpd\n" not in out
    client, parents, trials = sweep_runs(submitted_text_sweep.tracking, NAME)
    (run,) = trials
    assert run.info.status == "FINISHED", run.data.tags.get(names.FAILURE_REASON_TAG)
    assert run.data.params["model.branching"] == "3"
    assert run.data.tags[names.UNIT_TAG] == "bits per character"
    measured = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "bpd_measured")}
    assert sorted(measured) == [5, 20, 3 * 64] and all(0 < v < 10 for v in measured.values())
    samples = Path(client.download_artifacts(run.info.run_id, names.sample_grid(5, "text"), str(tmp_path)))
    lines = samples.read_text().splitlines()
    assert len(lines) == 2 and all(len(line) == 64 and set(line) <= set(ALPHABET) for line in lines)
    report = submitted_text_sweep.storage / "report"
    markdown = (report / "report.md").read_text()
    assert "budget vs bpc" in markdown and "bits per character" in markdown and "bits per dimension" not in markdown
    html = (report / "report.html").read_text()
    assert '<pre class="samples"' in html and "samples_budget_5.png" not in html
