"""The sweep report: budget versus bpd for every trial of a sweep, read back from MLflow.

One row per trial (its configuration, status, measured bpd at each budget, with all steps, total
steps, training time, restarts of its Train worker group), written as report.parquet, report.md
and a self-contained report.html (the plot and the sample grids inlined), with budget_bpd.png: per
trial, the optimal policy's measured bpd against total calls (solid, ±2 s.e.) and the naive
policy's (dashed), on a log x axis, the every-step value starred. Per configuration the report
then sets, at each budget, the measured bpd beside its excess over all steps on the same images
(paired standard error), the DP's prediction from the step table and the naive and joint policies;
the compressed size beside PNG and WebP-lossless on the same images; a sample grid per budget;
findings computed from the numbers (orchestrator/findings.py); and for CIFAR-10 the paper's
numbers. Failed and unfinished trials are rows with their status and reason, never dropped.
Everything is read from the trials' MLflow runs, so `ardm report` on a finished sweep gives the
same report as the sweep's end.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from ardm.budgets import format_calls_axis
from ardm.modality import IMAGE, TEXT, examples_name, unit_abbreviation, unit_name
from ardm.samples import sample_suffix
from ardm.storage import filesystem, write_atomic
from orchestrator import names
from orchestrator.findings import PAPER_CIFAR10, PAPER_TEXT8, findings
from orchestrator.layout import report_folder
from orchestrator.tracking import SweepTracker, TrackingError

STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}  # anything else: unfinished
KINDS = ("excess", "predicted", "naive", "joint")  # beside the measured optimal bpd at each budget
BASELINES = tuple(names.BASELINE.values())


@dataclass
class Report:
    """rows: one dict per trial (the Parquet columns); budgets: the budget columns (network calls,
    the "all steps" column aside); folder: where report.{md,html,parquet} and budget_bpd.png are;
    compressed: the budgets of the compressed_bpd_<k> columns."""

    rows: list[dict]
    budgets: list[int]
    folder: Path
    grids: dict[str, dict[int, bytes]] = field(default_factory=dict)  # run id -> budget -> PNG (or text) bytes
    notes: list[str] = field(default_factory=list)
    compressed: list[int] = field(default_factory=list)

    @property
    def modality(self) -> str:
        """text when every trial's runs say bits per character (ardm.unit), else image."""
        units = {r.get("unit") for r in self.rows}
        return TEXT if units == {unit_name(TEXT)} else IMAGE

    @property
    def unit(self) -> str:
        """The abbreviated unit of the report's numbers: bpd, or bpc for text."""
        return unit_abbreviation(self.modality)

    @property
    def html(self) -> Path:
        return self.folder / "report.html"


def default_folder(tracker: SweepTracker, parent_id: str) -> Path:
    """Where `ardm report` writes by default: the sweep's own report folder, from its run's params."""
    params = tracker.client.get_run(parent_id).data.params
    return report_folder(params.get("storage.path"), params.get("sweep.name", tracker.experiment))


def latest_sweep(tracker: SweepTracker) -> str:
    """The run id of the experiment's most recent sweep (parent) run."""
    runs = tracker.client.search_runs([tracker.experiment_id],
                                      filter_string=f"tags.`{names.ROLE_TAG}` = '{names.SWEEP_ROLE}'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise TrackingError(f"{tracker.shown_uri}: experiment {tracker.experiment!r} has no sweep run")
    return runs[0].info.run_id


def trial_row(tracker: SweepTracker, run: Run) -> tuple[dict, set[int], set[int]]:
    """A trial run as a report row: status, reason, and its metrics (bits per dimension, seconds).
    Budget columns are `bpd_budget_<k>` (the optimal policy, measured) and `bpd_budget_<k>_<kind>`
    for each of KINDS, each with `_stderr`, and `compressed_bpd_<k>`; k is total calls. The values
    are the run's curve metrics (orchestrator.names), the standard errors its curve table.
    Returns (the row, its budgets below all steps, its compression budgets)."""
    m, tags, params = run.data.metrics, run.data.tags, run.data.params
    total = int(m[names.TOTAL_STEPS]) if names.TOTAL_STEPS in m else None
    row = {
        "trial": tags.get(names.TRIAL_TAG, run.info.run_name),
        "configuration": tags.get(names.CONFIGURATION_TAG, run.info.run_name),
        "branching": params.get("model.branching"),
        "parameterization": params.get("model.parameterization"),
        "status": STATUS.get(run.info.status, "unfinished"),
        "reason": tags.get(names.FAILURE_REASON_TAG, ""),
        "run_id": run.info.run_id,
        "data": params.get("data.spec"),
        "unit": tags.get(names.UNIT_TAG, unit_name(IMAGE)),  # runs from before the tag measured images
        "table_split": params.get("postprocess.table_split"),
        "test_bpd": m.get(names.TEST_BPD), "test_bpd_stderr": m.get(names.TEST_BPD_STDERR),
        "full_elbo_bpd": m.get(names.FULL_ELBO),
        "total_steps": total, "num_stages": int(m[names.NUM_STAGES]) if names.NUM_STAGES in m else None,
        "train_time_s": m.get(names.WALL_TIME),
        "restarts": int(m.get(names.TRAIN_RESTARTS, 0)),  # of its Train worker group (a lost worker or node)
        **{name: m.get(name) for name in BASELINES},
    }
    budgets: set[int] = set()
    compressed: set[int] = set()
    if total is None:  # not post-processed
        return row, budgets, compressed
    suffix = {names.MEASURED["optimal"]: "", names.MEASURED["naive"]: "_naive", names.MEASURED["optimal-joint"]:
              "_joint", names.PREDICTED: "_predicted", names.EXCESS: "_excess"}
    for key in names.CURVES:
        for calls, value in _curve(tracker, run.info.run_id, key).items():
            if key == names.COMPRESSED:
                row[f"compressed_bpd_{calls}"] = value
                compressed.add(calls)
            elif calls == total:
                if key == names.MEASURED["optimal"]:
                    row["bpd_all_steps"] = value
            else:
                row[f"bpd_budget_{calls}{suffix[key]}"] = value
                if key == names.MEASURED["optimal"]:
                    budgets.add(calls)
    for r in _curve_table(tracker, run.info.run_id):
        kinds = {"": "measured", "_predicted": "predicted", "_excess": "excess"} if r["policy"] == "optimal" else \
            {suffix[names.MEASURED[r["policy"]]]: "measured"}
        for column, kind in kinds.items():
            if r["calls"] != total:
                row[f"bpd_budget_{r['calls']}{column}_stderr"] = r[f"{kind}_stderr"]
        if r["calls"] == total and r["policy"] == "optimal":
            row["bpd_all_steps_stderr"], row["full_elbo_stderr"] = r["measured_stderr"], r["predicted_stderr"]
    return row, budgets, compressed


def _curve(tracker: SweepTracker, run_id: str, key: str) -> dict[int, float]:
    """A curve metric as {step: value}, the latest value at each step (a re-run logs it again)."""
    history = sorted(tracker.client.get_metric_history(run_id, key), key=lambda p: p.timestamp)
    return {p.step: p.value for p in history}


def _curve_table(tracker: SweepTracker, run_id: str) -> list[dict]:
    """The rows of the run's curve table (names.CURVE_TABLE: standard errors, calls per stage); [] if absent."""
    try:
        with tempfile.TemporaryDirectory() as scratch:
            local = tracker.client.download_artifacts(run_id, names.CURVE_TABLE, scratch)
            return pq.read_table(local).to_pylist()
    except (MlflowException, OSError):
        return []


def _sample_grids(tracker: SweepTracker, run_id: str, budgets: set[int], modality: str) -> dict[int, bytes]:
    """The trial's post-processing samples at `budgets` (budget -> the bytes of its PNG grid, or of
    its .txt lines for text), those it has."""
    wanted = {names.sample_grid(budget, modality): budget for budget in budgets}
    grids = {}
    try:
        logged = [a.path for a in tracker.client.list_artifacts(run_id, names.POSTPROCESS_ARTIFACTS)]
        with tempfile.TemporaryDirectory() as scratch:
            for path in logged:
                if path in wanted:
                    local = tracker.client.download_artifacts(run_id, path, scratch)
                    grids[wanted[path]] = Path(local).read_bytes()
    except (MlflowException, OSError):
        return {}  # a report without pictures beats no report
    return grids


def build_report(tracker: SweepTracker, parent_id: str, out: str | Path, log: bool = True) -> Report:
    """Write the report of sweep run `parent_id` into `out` (a local folder) and, with `log`, log
    it to that run under report/."""
    parent = tracker.client.get_run(parent_id)
    trials = [trial_row(tracker, run) for run in tracker.runs_of(parent_id)]
    budgets = sorted({b for _, found, _ in trials for b in found})
    compressed = sorted({b for _, _, found in trials for b in found})
    columns = ["trial", "configuration", "branching", "parameterization", "status", "reason", "run_id", "data",
               "unit", "table_split", "test_bpd", "test_bpd_stderr", "full_elbo_bpd", "full_elbo_stderr", "total_steps",
               "num_stages", "train_time_s", "restarts", "bpd_all_steps", "bpd_all_steps_stderr", *BASELINES]
    columns += [f"bpd_budget_{b}{kind}{s}" for b in budgets for kind in ("", *(f"_{k}" for k in KINDS))
                for s in ("", "_stderr")]
    columns += [f"compressed_bpd_{b}" for b in compressed]
    rows = [{c: r.get(c) for c in columns} for r, _, _ in sorted(trials, key=lambda t: t[0]["trial"])]
    grids = {r["run_id"]: _sample_grids(tracker, r["run_id"], {*found, r["total_steps"]},
                                        TEXT if r["unit"] == unit_name(TEXT) else IMAGE)
             for r, found, _ in trials if r["status"] == "finished" and r["total_steps"] is not None}
    report = Report(rows=rows, budgets=budgets, folder=Path(out), grids=grids, compressed=compressed)
    report.notes = _notes(report)
    text = {"trial", "configuration", "branching", "parameterization", "status", "reason", "run_id", "data",
            "unit", "table_split"}
    schema = pa.schema([(c, pa.string() if c in text else pa.int64() if c == "restarts" else pa.float64())
                        for c in columns])
    table = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), table)
    _write(report.folder / "report.parquet", table.getvalue())
    title = f"{tracker.experiment}: budget vs {report.unit}"
    plot = plot_report(report, report.folder / "budget_bpd.png", title)
    header = (f"Sweep run `{parent_id}` ({parent.info.run_name}), MLflow {tracker.shown_uri}, "
              f"{len(rows)} trial(s); written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    _write(report.folder / "report.md", _markdown(report, title, header).encode())
    _write(report.html, _html(report, title, header, plot.read_bytes()).encode())
    if log:
        tracker.log_artifact(parent_id, report.folder, names.REPORT_ARTIFACTS)
    return report


def _notes(report: Report) -> list[str]:
    """What a reader must know to compare the numbers: where the tables came from."""
    on_test = [r["configuration"] for r in report.rows if r["table_split"] == "test"]
    if on_test:
        return [f"The step tables of {', '.join(on_test)} were estimated on the test split, the images the bpd "
                "is measured on: the optimal policies were chosen on those images, so their measured bpd is "
                "optimistically biased."]
    return []


def _cell(value: float | None, stderr: float | None = None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}" if stderr is None else f"{value:.{digits}f} ± {stderr:.{digits}f}"


def _table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the summary table (the same for Markdown and HTML): one row per trial."""
    header = ["configuration", "status", *[f"{b} calls" for b in report.budgets], "all steps", "total steps",
              "training time", "restarts"]
    cells = []
    for r in report.rows:
        status = r["status"] + (f": {r['reason'][:100]}" if r["reason"] else "")
        minutes = "—" if r["train_time_s"] is None else f"{r['train_time_s'] / 60:.1f} min"
        cells.append([
            r["configuration"], status,
            *[_cell(r[f"bpd_budget_{b}"], r[f"bpd_budget_{b}_stderr"]) for b in report.budgets],
            _cell(r["bpd_all_steps"], r["bpd_all_steps_stderr"]),
            "—" if r["total_steps"] is None else str(r["total_steps"]), minutes, str(r["restarts"]),
        ])
    return header, cells


def _per_stage(calls: int, stages: int | None) -> str:
    if not stages or stages == 1:
        return str(calls)
    return f"{stages} x {calls // stages}" if calls % stages == 0 else f"{calls} ({stages} stages)"


def _budget_table(report: Report, r: dict) -> tuple[list[str], list[list[str]]]:
    """One finished trial's budgets: measured, excess over all steps (paired), predicted, naive, joint."""
    header = ["calls", "per stage", "measured (optimal)", "excess over all steps", "predicted (table)", "naive",
              "joint split"]
    cells = []
    for b in report.budgets:
        if r[f"bpd_budget_{b}"] is None:
            continue
        # The excess gets a fourth digit: a 0.002 bpd difference is what its paired error resolves.
        cells.append([str(b), _per_stage(b, r["num_stages"]), _cell(r[f"bpd_budget_{b}"], r[f"bpd_budget_{b}_stderr"]),
                      *[_cell(r[f"bpd_budget_{b}_{k}"], r[f"bpd_budget_{b}_{k}_stderr"], 4 if k == "excess" else 3)
                        for k in ("excess", "predicted", "naive", "joint")]])
    if r["bpd_all_steps"] is not None:
        cells.append([str(r["total_steps"]), _per_stage(r["total_steps"], r["num_stages"]),
                      _cell(r["bpd_all_steps"], r["bpd_all_steps_stderr"]), "0 (reference)",
                      _cell(r["full_elbo_bpd"], r["full_elbo_stderr"]), "(same)", "(same)"])
    return header, cells


def _compression_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Per finished trial and compression budget: the rANS payload beside PNG and WebP-lossless."""
    header = ["configuration", "calls", "per stage", "ARDM (rANS)", "measured bpd", "PNG", "WebP-lossless"]
    cells = []
    for r in report.rows:
        for b in report.compressed:
            if (bpd := r[f"compressed_bpd_{b}"]) is None:
                continue
            cells.append([r["configuration"], str(b), _per_stage(b, r["num_stages"]), _cell(bpd),
                          _cell(r.get(f"bpd_budget_{b}"), r.get(f"bpd_budget_{b}_stderr")),
                          _cell(r["png_bpd"]), _cell(r["webp_lossless_bpd"])])
    return header, cells


def _paper_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """The paper's numbers for the dataset the sweep ran on: CIFAR-10 or text8 (none for others)."""
    data = {(r["data"] or "").split(":")[0].split("?")[0] for r in report.rows}
    paper = PAPER_CIFAR10 if "cifar10" in data else PAPER_TEXT8 if "text8" in data else ()
    if not paper:
        return [], []
    return (["paper (Hoogeboom et al., 2022)", "calls", "what", report.unit],
            [[m, calls, kind, f"{value:.2f}"] for m, calls, kind, value in paper])


def _note(report: Report) -> str:
    """How to read the numbers, in the report's unit."""
    examples = examples_name(report.modality)
    return (f"{report.unit}: measured {unit_name(report.modality)} ± standard error on the post-processing's test "
            f"{examples} (postprocess.max_images, spread over the test split), under the DP policy chosen on a step "
            f"table of other {examples} (postprocess.table_split), the budget (total network calls) split evenly "
            "over stages. Every budget is measured on the same examples and orders, so its excess over all steps has "
            "a paired standard error, free of the example-to-example spread. predicted: the policy's cost under the "
            "step table, whose every-step sum is the table's ELBO on its own examples.")


def _sections(report: Report) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(heading, table header, table cells, run id or "") of every section after the summary."""
    sections = [(f"{r['configuration']}: budgets", *_budget_table(report, r), r["run_id"])
                for r in report.rows if r["status"] == "finished"]
    head, cells = _compression_table(report)
    if cells:
        sections.append(("Compression (per image, payload) against PNG and WebP-lossless on the same images",
                         head, cells, ""))
    head, cells = _paper_table(report)
    if cells:
        dataset = "text8" if report.modality == TEXT else "CIFAR-10"
        sections.append((f"The paper's {dataset} numbers", head, cells, ""))
    return sections


def _md_table(head: list[str], cells: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]]


def _markdown(report: Report, title: str, header: str) -> str:
    head, cells = _table(report)
    lines = [f"# {title}", "", header, "", f"![budget vs {report.unit}](budget_bpd.png)", "", *_md_table(head, cells),
             ""]
    found = findings(report.rows, report.budgets, report.unit)
    if found or report.notes:
        lines += ["## Findings", "", *[f"- {f}" for f in [*report.notes, *found]], ""]
    for heading, head, cells, _ in _sections(report):
        lines += [f"## {heading}", "", *_md_table(head, cells), ""]
    if any(report.grids.values()):
        suffix = sample_suffix(report.modality)
        lines += [f"Samples per budget: report.html, and each trial's postprocess/samples_budget_<k>{suffix}.", ""]
    return "\n".join([*lines, _note(report), ""])


def _html_table(head: list[str], cells: list[list[str]], classes: list[str] | None = None, id_: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        (f'<tr class="{html.escape(c)}">' if c else "<tr>") + "".join(f"<td>{html.escape(x)}</td>" for x in row)
        + "</tr>" for row, c in zip(cells, classes or [""] * len(cells), strict=True)
    )
    ident = f' id="{id_}"' if id_ else ""
    return f"<table{ident}><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _png(data: bytes, alt: str, ident: str = "") -> str:
    ident = f' id="{ident}"' if ident else ""
    return f'<img{ident} alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _samples(data: bytes, alt: str) -> str:
    """A trial's samples inlined: a PNG grid as an image, text samples as preformatted lines."""
    if data.startswith(b"\x89PNG"):
        return _png(data, alt)
    return f'<pre class="samples" title="{html.escape(alt)}">{html.escape(data.decode())}</pre>'


def _html(report: Report, title: str, header: str, png: bytes) -> str:
    head, cells = _table(report)
    parts = [_html_table(head, cells, [r["status"] for r in report.rows], "report")]
    found = findings(report.rows, report.budgets, report.unit)
    if found or report.notes:
        items = "".join(f"<li>{html.escape(f)}</li>" for f in [*report.notes, *found])
        parts.append(f'<h2>Findings</h2><ul id="findings">{items}</ul>')
    for heading, head, cells, run_id in _sections(report):
        parts.append(f"<h2>{html.escape(heading)}</h2>{_html_table(head, cells)}")
        grids = report.grids.get(run_id, {})
        if grids:
            figures = "".join(f"<figure>{_samples(grids[b], f'samples at {b} calls')}<figcaption>{b} calls"
                              f"</figcaption></figure>" for b in sorted(grids))
            parts.append(f'<div class="grids">{figures}</div>')
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }}
th:nth-child(-n+2), td:nth-child(-n+2) {{ text-align: left; }}
tr.failed, tr.killed {{ background: #fde2e2; }} tr.unfinished {{ background: #fff4d6; }}
.grids {{ display: flex; flex-wrap: wrap; gap: 1em; }} figure {{ margin: 0; text-align: center; }}
figure img {{ width: 160px; image-rendering: pixelated; }} pre.samples {{ text-align: left; margin: 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(header)}</p>
{_png(png, f"budget vs {report.unit}", "plot")}
{body}
<p>{html.escape(_note(report))}</p>
</body></html>
"""


def plot_report(report: Report, path: Path, title: str) -> Path:
    """Per trial: the optimal policy's measured bpd against total calls (solid, ±2 s.e.), the naive
    policy's (dashed, same colour), and the every-step value as a star at x = total steps; trials
    without budget results are listed in the legend."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the driver or CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for i, r in enumerate(report.rows):
        label = r["configuration"] if r["status"] == "finished" else f"{r['configuration']} ({r['status']})"
        points = [(b, r[f"bpd_budget_{b}"], r[f"bpd_budget_{b}_stderr"]) for b in report.budgets
                  if r[f"bpd_budget_{b}"] is not None]
        full = [] if r["bpd_all_steps"] is None else [(r["total_steps"], r["bpd_all_steps"], r["bpd_all_steps_stderr"])]
        if not points + full:
            ax.plot([], [], color=f"C{i}", label=f"{label}: no budget results")
            continue
        x, y, se = zip(*sorted(points + full), strict=True)
        ax.errorbar(x, y, yerr=[2 * (s or 0.0) for s in se], marker="o", capsize=3, color=f"C{i}", label=label)
        naive = sorted((b, r[f"bpd_budget_{b}_naive"]) for b in report.budgets
                       if r[f"bpd_budget_{b}_naive"] is not None)
        if naive:
            nx, ny = zip(*(naive + [(p[0], p[1]) for p in full]), strict=True)
            ax.plot(nx, ny, ls="--", color=f"C{i}", alpha=0.8, label=f"{r['configuration']} naive")
        if full:
            ax.plot([full[0][0]], [full[0][1]], marker="*", ms=13, color=f"C{i}", ls="none",
                    label=f"{r['configuration']} all steps {full[0][1]:.3f}")
    format_calls_axis(ax)
    ax.set_ylabel(f"{unit_name(report.modality)} (test)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    _write(path, png.getvalue())
    return path


def _write(path: Path, payload: bytes | pa.Buffer) -> None:
    """Each report file is written atomically: out of space, one line names it and the free space,
    and the previous report's file stays whole."""
    write_atomic(*filesystem(str(path)), payload)
