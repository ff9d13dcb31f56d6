"""The sweep report: budget versus bpd for every trial of a sweep, read back from MLflow.

One row per trial (its configuration, status, bpd at each budget, the full-step ELBO, total
steps, training time), written as report.parquet, report.md and a self-contained report.html
(the plot inlined), with budget_bpd.png: one measured bpd-vs-budget curve per trial on a log x
axis, the full-step ELBO marked. Failed and unfinished trials are rows with their status and
reason, never dropped. Everything is read from the trials' MLflow runs, so `ardm report` on a
finished sweep gives the same report as the one written at the sweep's end.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Run

from orchestrator.tracking import FAILURE_REASON_TAG, ROLE_TAG, TRIAL_TAG, SweepTracker, TrackingError

CONFIGURATION_TAG = "ardm.configuration"
_BUDGET_METRIC = re.compile(r"^bpd_budget_(\d+)_measured$")
_BUDGET_COLUMN = re.compile(r"^bpd_budget_(\d+)$")
STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}  # anything else: unfinished


@dataclass
class Report:
    """rows: one dict per trial (the Parquet columns); budgets: the budget columns (network calls,
    the "all steps" column aside); folder: where report.{md,html,parquet} and budget_bpd.png are."""

    rows: list[dict]
    budgets: list[int]
    folder: Path

    @property
    def html(self) -> Path:
        return self.folder / "report.html"


def latest_sweep(tracker: SweepTracker) -> str:
    """The run id of the experiment's most recent sweep (parent) run."""
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'sweep'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise TrackingError(f"{tracker.uri}: experiment {tracker.experiment!r} has no sweep run")
    return runs[0].info.run_id


def trial_row(run: Run) -> dict:
    """A trial run as a report row: status, reason, and its metrics (bits per dimension, seconds)."""
    m, tags = run.data.metrics, run.data.tags
    total = int(m["total_steps"]) if "total_steps" in m else None
    row = {
        "trial": tags.get(TRIAL_TAG, run.info.run_name),
        "configuration": tags.get(CONFIGURATION_TAG, run.info.run_name),
        "branching": run.data.params.get("model.branching"),
        "parameterization": run.data.params.get("model.parameterization"),
        "status": STATUS.get(run.info.status, "unfinished"),
        "reason": tags.get(FAILURE_REASON_TAG, ""),
        "run_id": run.info.run_id,
        "test_bpd": m.get("test_bpd"), "test_bpd_stderr": m.get("test_bpd_stderr"),
        "full_elbo_bpd": m.get("full_elbo_bpd"), "full_elbo_stderr": m.get("full_elbo_stderr"),
        "total_steps": total, "train_time_s": m.get("wall_time_s"),
        "bpd_all_steps": m.get(f"bpd_budget_{total}_measured"),
        "bpd_all_steps_stderr": m.get(f"bpd_budget_{total}_measured_stderr"),
    }
    for key, value in m.items():
        found = _BUDGET_METRIC.match(key)
        if found and int(found[1]) != total:
            row[f"bpd_budget_{found[1]}"] = value
            row[f"bpd_budget_{found[1]}_stderr"] = m.get(f"{key}_stderr")
    return row


def build_report(tracker: SweepTracker, parent_id: str, out: str | Path, log: bool = True) -> Report:
    """Write the report of sweep run `parent_id` into `out` (a local folder) and, with `log`, log
    it to that run under report/."""
    parent = tracker.client.get_run(parent_id)
    rows = [trial_row(run) for run in tracker.runs_of(parent_id)]
    budgets = sorted({int(found[1]) for r in rows for k in r if (found := _BUDGET_COLUMN.match(k))})
    columns = ["trial", "configuration", "branching", "parameterization", "status", "reason", "run_id",
               "test_bpd", "test_bpd_stderr", "full_elbo_bpd", "full_elbo_stderr", "total_steps", "train_time_s",
               "bpd_all_steps", "bpd_all_steps_stderr"]
    columns += [f"bpd_budget_{b}{s}" for b in budgets for s in ("", "_stderr")]
    rows = [{c: r.get(c) for c in columns} for r in sorted(rows, key=lambda r: r["trial"])]
    report = Report(rows=rows, budgets=budgets, folder=Path(out))
    report.folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([(c, pa.string() if c in columns[:7] else pa.float64()) for c in columns])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), report.folder / "report.parquet")
    title = f"{tracker.experiment}: budget vs bpd"
    plot = plot_report(report, report.folder / "budget_bpd.png", title)
    header = (f"Sweep run `{parent_id}` ({parent.info.run_name}), MLflow {tracker.uri}, "
              f"{len(rows)} trial(s); written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    (report.folder / "report.md").write_text(_markdown(report, title, header))
    report.html.write_text(_html(report, title, header, plot.read_bytes()))
    if log:
        tracker.log_artifact(parent_id, report.folder, "report")
    return report


def _cell(value: float | None, stderr: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if stderr is None else f"{value:.{digits}f} ± {stderr:.{digits}f}"


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the report table (the same for Markdown and HTML)."""
    header = ["configuration", "status", *[f"{b} calls" for b in report.budgets], "all steps", "full-step ELBO",
              "total steps", "training time"]
    cells = []
    for r in report.rows:
        status = r["status"] + (f": {r['reason'][:100]}" if r["reason"] else "")
        minutes = "—" if r["train_time_s"] is None else f"{r['train_time_s'] / 60:.1f} min"
        cells.append([
            r["configuration"], status,
            *[_cell(r[f"bpd_budget_{b}"], r[f"bpd_budget_{b}_stderr"]) for b in report.budgets],
            _cell(r["bpd_all_steps"], r["bpd_all_steps_stderr"]), _cell(r["full_elbo_bpd"], r["full_elbo_stderr"]),
            "—" if r["total_steps"] is None else str(r["total_steps"]), minutes,
        ])
    return header, cells


_NOTE = ("bpd: measured bits per dimension ± standard error on the post-processing's test images "
         "(postprocess.max_images, spread over the test split), under the DP policy with the budget "
         "(network calls) split evenly over stages; full-step ELBO: from the step table on the same images.")


def _markdown(report: Report, title: str, header: str) -> str:
    head, cells = _table(report)
    lines = [f"# {title}", "", header, "", "![budget vs bpd](budget_bpd.png)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join([*lines, "", _NOTE, ""])


def _html(report: Report, title: str, header: str, png: bytes) -> str:
    head, cells = _table(report)
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        f'<tr class="{html.escape(r["status"])}">' + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for r, row in zip(report.rows, cells, strict=True)
    )
    image = base64.b64encode(png).decode()
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
tr.failed, tr.killed {{ background: #fde2e2; }} tr.unfinished {{ background: #fff4d6; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(header)}</p>
<img id="plot" alt="budget vs bpd" src="data:image/png;base64,{image}">
<table id="report"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>
<p>{html.escape(_NOTE)}</p>
</body></html>
"""


def plot_report(report: Report, path: Path, title: str) -> Path:
    """One measured bpd-vs-budget curve per trial (log x, ±2 s.e.), its full-step ELBO as a star
    at x = total steps with a dotted line; trials without budget results are listed in the legend."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the driver or CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for i, r in enumerate(report.rows):
        points = [(b, r[f"bpd_budget_{b}"], r[f"bpd_budget_{b}_stderr"]) for b in report.budgets
                  if r[f"bpd_budget_{b}"] is not None]
        if r["bpd_all_steps"] is not None:
            points.append((r["total_steps"], r["bpd_all_steps"], r["bpd_all_steps_stderr"]))
        label = r["configuration"] if r["status"] == "finished" else f"{r['configuration']} ({r['status']})"
        if not points:
            ax.plot([], [], color=f"C{i}", label=f"{label}: no budget results")
            continue
        x, y, se = zip(*sorted(points), strict=True)
        ax.errorbar(x, y, yerr=[2 * (s or 0.0) for s in se], marker="o", capsize=3, color=f"C{i}", label=label)
        if r["full_elbo_bpd"] is not None:
            ax.axhline(r["full_elbo_bpd"], color=f"C{i}", ls=":", lw=1)
            ax.plot([r["total_steps"]], [r["full_elbo_bpd"]], marker="*", ms=12, color=f"C{i}",
                    label=f"{r['configuration']} full-step ELBO {r['full_elbo_bpd']:.3f}")
    ax.set_xscale("log")
    ax.set_xlabel("network calls (budget)")
    ax.set_ylabel("bits per dimension (test)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
