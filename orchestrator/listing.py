"""What `ardm runs` lists: the experiments of an MLflow store, or the trials of one experiment with
their status, test bpd and checkpoint, so that nobody has to browse folders of checkpoint_<timestamp>."""

from __future__ import annotations

from orchestrator import names
from orchestrator.tracking import SweepTracker


def experiment_rows(tracker_uri: str) -> list[dict]:
    """One row per active experiment, most recently updated first: name, id, its number of sweeps."""
    from mlflow import MlflowClient

    client = MlflowClient(tracker_uri)
    rows = []
    for experiment in client.search_experiments(order_by=["last_update_time DESC"]):
        sweeps = client.search_runs([experiment.experiment_id],
                                    filter_string=f"tags.`{names.ROLE_TAG}` = '{names.SWEEP_ROLE}'")
        rows.append({"experiment": experiment.name, "id": experiment.experiment_id, "sweeps": len(sweeps)})
    return rows


def trial_rows(tracker: SweepTracker) -> list[dict]:
    """One row per trial run of the experiment, newest first: trial, status, test bpd ± stderr,
    run id, model id and checkpoint (what any --checkpoint takes)."""
    runs = tracker.client.search_runs([tracker.experiment_id],
                                      filter_string=f"tags.`{names.ROLE_TAG}` = '{names.TRIAL_ROLE}'",
                                      order_by=["attributes.start_time DESC"])
    return [{
        "trial": run.data.tags.get(names.TRIAL_TAG, run.info.run_name), "status": run.info.status,
        "test_bpd": run.data.metrics.get(names.TEST_BPD),
        "test_bpd_stderr": run.data.metrics.get(names.TEST_BPD_STDERR),
        "run_id": run.info.run_id, "model_id": run.data.tags.get(names.MODEL_ID_TAG, ""),
        "checkpoint": run.data.tags.get(names.CHECKPOINT_TAG, ""),
    } for run in runs]


def format_rows(rows: list[dict], columns: list[str]) -> str:
    """Rows as an aligned text table; floats with 4 decimals, None as '—'."""
    def cell(value: object) -> str:
        return "—" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    cells = [[cell(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)
