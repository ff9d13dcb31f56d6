"""Post-processing of one trained model on Ray: step table, DP policies per budget, measured bpd.

    1. the per-step table l_{j,t} on training images by default (postprocess.table_split: the
       policies are never chosen on the images they are measured on), in step ranges as Ray tasks
       (orchestrator.tables);
    2. the DP policies for every budget on the driver (ardm.budgets.budget_policies: per-stage
       equal budgets as in the paper, the joint allocation for upscale models, the naive baseline);
       the full budget (every step) is always among them, as every budget's excess is over it;
    3. one Ray task per budget that measures each policy's bpd on the test images with
       ardm.budgets.measure_budget (the one measurement that `ardm budgets` uses too; all budgets
       on the same images and orders) and draws a sample grid with the optimal policy;
    4. with postprocess.compression.budgets, one Ray task per budget that rANS-codes test images
       and codes the same images with PNG and WebP-lossless.

Results land in `out` (a path, or a URI) under a folder named by a hash of the model's identity,
the data and every setting but the budgets (orchestrator/layout.py: the step table and its parts,
each budget's results and sample grid). A part or budget file already there is
reused, so a resumed or repeated run only computes what is missing, and adding budgets later only
measures the new ones; other settings or another model start afresh. The curve
(budget_bpd.parquet/.csv/.png, policies.json), the table (Parquet and CSV) and the grids are
gathered in <out>/artifacts for MLflow.

MLflow metrics of a trial (bits per dimension), the budget curves with step = total network calls
(orchestrator.names; MLflow's charts then draw bpd against calls, one line per trial):
    bpd_measured      the optimal policy (the DP's, the budget split evenly over stages), measured on test images
    bpd_predicted     its cost under the step table
    bpd_excess        its excess over the every-step bpd on the same images (paired)
    bpd_naive         evenly spaced chunks, measured
    bpd_joint         the jointly allocated DP policy, measured (S > 1 only)
    bpd_compressed    with postprocess.compression.budgets: the real rANS-coded payload of test images
                      under the optimal policy
and with one value: full_elbo_bpd (the table's, on its own images), total_steps (S*D), num_stages
(S), png_bpd and webp_lossless_bpd (the compressed images as PNG / WebP-lossless files). Standard
errors and calls per stage are in the artifact postprocess/budget_bpd.parquet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.csv as pacsv
import ray
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ardm.budgets import BudgetCurve, budget_policies, curve_row, save_budget_curve
from ardm.checkpoint import check_data_fits, load_checkpoint, load_model, trained_data
from ardm.config import ConfigError
from ardm.data import load_dataset
from ardm.evaluate import Estimate
from ardm.modality import unit_abbreviation
from ardm.storage import is_uri, read_file, read_json
from ardm.tables import model_identity
from orchestrator import layout, names
from orchestrator.budget_tasks import compress_budget_task, measure_budget_task
from orchestrator.cluster import connect_ray
from orchestrator.config import PostprocessSection
from orchestrator.models import local_checkpoint
from orchestrator.tables import OUTSIDE_TRIAL, distributed_step_table
from orchestrator.tracking import SweepTracker, TrackingError, check_tracking, redact


@dataclass
class Postprocessed:
    """curve: the budget curve; metrics: the MLflow metrics above with one value; curves: those
    whose step is the budget in calls, {key: {calls: bpd}}; folder: a local folder holding the
    artifacts to log (step_table.parquet/.csv, budget_bpd.*, policies.json, sample grids)."""

    curve: BudgetCurve
    metrics: dict[str, float]
    curves: dict[str, dict[int, float]]
    folder: Path


def postprocess_checkpoint(
    checkpoint: str, data: str, out: str, settings: PostprocessSection, seed: int = 0, use_gpu: bool = False
) -> Postprocessed:
    """Run the whole post-processing of one checkpoint's EMA model on Ray (orchestrator.cluster).

    checkpoint: a path every node can read; data: a dataset spec every node can read (its test
    split is used); out: folder (path or URI) for every result. Budgets outside S..S*D for this
    model raise ConfigError.
    """
    model = load_model(checkpoint, ema=True)
    try:
        budgets = settings.resolve_budgets(model.num_stages, model.num_steps)
        compress_at = settings.resolve_compression_budgets(model.num_stages, model.num_steps)
    except ValueError as err:
        raise ConfigError(f"{checkpoint}: {err}") from None
    test = load_dataset(data, "test")
    check_data_fits(model.spec, test.shape, test.num_classes, data)
    connect_ray()  # only now: bad input fails before anything starts
    # Results are kept per (model, data, settings but the budgets): reused only where they still hold.
    key = {"model": model_identity(model), "data": data, "seed": seed,
           **{k: v for k, v in asdict(settings).items()
              if k not in ("budgets", "enabled", "table_ranges", "compression")}}
    work = layout.postprocess_work(out, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12])
    table = distributed_step_table(
        checkpoint, data, layout.tables_folder(work), model.num_steps, settings.table_ranges,
        settings.table_samples_per_step, settings.steps_per_call, seed, settings.table_split,
        settings.table_images, use_gpu,
    )
    budgets = sorted({*budgets, model.num_steps})  # every budget's excess is over the full one
    policies = budget_policies(table.matrix("nll_bits"), sorted({*budgets, *compress_at}), settings.sort_decreasing)
    task = measure_budget_task.options(num_gpus=1 if use_gpu else 0, num_cpus=1, scheduling_strategy=OUTSIDE_TRIAL)
    task_settings = {k: getattr(settings, k) for k in ("max_images", "orders_per_image", "sample_grid")}
    results, pending = {}, []
    compression = asdict(settings.compression) | {"budgets": None}
    compressed, compressing = {}, []
    for budget in compress_at:
        done = read_json(layout.compression_result(work, budget))
        if done is not None and done["policy"] == policies[budget, "optimal"] and done["settings"] == compression:
            compressed[budget] = done
        else:
            compressing.append(compress_budget_task.options(num_cpus=1, scheduling_strategy=OUTSIDE_TRIAL).remote(
                checkpoint, data, budget, policies[budget, "optimal"], compression, seed, work))
    for budget in budgets:
        wanted = {name: starts for (b, name), starts in policies.items() if b == budget}
        done = read_json(layout.budget_result(work, budget))
        if done is not None and done["policies"] == wanted:
            results[budget] = done
        else:
            pending.append(task.remote(checkpoint, data, budget, wanted, task_settings, seed, work))
    results |= {r["budget"]: r for r in ray.get(pending)}
    compressed |= {r["budget"]: r for r in ray.get(compressing)}
    full = Estimate.from_dict(results[model.num_steps]["measured"]["optimal"])
    rows = [
        curve_row(table, budget, name, starts, Estimate.from_dict(results[budget]["measured"][name]), full,
                  settings.sort_decreasing)
        for (budget, name), starts in policies.items() if budget in results
    ]
    curve = BudgetCurve(rows=rows, policies=policies, full_elbo=table.full_elbo_bpd(), modality=model.spec.modality)
    folder = layout.artifacts_folder(out)
    save_budget_curve(curve, folder, title=f"{model.upscaler}: budget vs {unit_abbreviation(model.spec.modality)}")
    pacsv.write_csv(table.to_arrow(), (folder / layout.STEP_TABLE).with_suffix(".csv"))
    kept = {layout.STEP_TABLE: layout.step_table(layout.tables_folder(work))}
    modality = model.spec.modality
    kept |= {names.sample_grid_file(b, modality): layout.sample_grid(work, b, modality) for b in budgets}
    for name, uri in kept.items():
        if (payload := read_file(uri)) is not None:
            (folder / name).write_bytes(payload)
    metrics, curves = curve_metrics(curve, model.num_steps, model.num_stages)
    for budget, done in compressed.items():
        curves[names.COMPRESSED][budget] = done["bpd"]
        metrics |= {names.BASELINE[codec]: bpd for codec, bpd in done["baselines"].items()}
    if compressed:
        (folder / names.COMPRESSION_FILE).write_text(json.dumps(list(compressed.values())))
    return Postprocessed(curve=curve, metrics=metrics, curves=curves, folder=folder)


def curve_metrics(curve: BudgetCurve, total_steps: int, num_stages: int
                  ) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """The MLflow metrics of a budget curve (see the module docstring): (one-value metrics,
    curves {key: {calls: bpd}}); the standard errors are in the curve's table (names.CURVE_TABLE)."""
    metrics = {names.FULL_ELBO: curve.full_elbo[0], names.TOTAL_STEPS: float(total_steps),
               names.NUM_STAGES: float(num_stages)}
    curves: dict[str, dict[int, float]] = {key: {} for key in names.CURVES}
    for r in curve.rows:
        curves[names.MEASURED[r["policy"]]][r["calls"]] = r["measured_bpd"]
        if r["policy"] == "optimal":
            curves[names.PREDICTED][r["calls"]] = r["predicted_bpd"]
            curves[names.EXCESS][r["calls"]] = r["excess_bpd"]
    return metrics, curves


@dataclass
class Target:
    """What `ardm postprocess RUN` works on: a checkpoint file, the dataset spec it trained on, and
    the trial's MLflow run (tracker and run id) when RUN named one."""

    checkpoint: str
    data: str | None
    tracker: SweepTracker | None = None
    run_id: str | None = None

    def log(self, done: Postprocessed) -> bool:
        """Log the results (metrics, curves, the artifacts folder under postprocess/) to the trial's
        run; False when RUN named a checkpoint, not a run."""
        if self.tracker is None or self.run_id is None:
            return False
        self.tracker.log_metrics(self.run_id, done.metrics)
        self.tracker.log_curves(self.run_id, done.curves)
        self.tracker.log_artifact(self.run_id, done.folder, "postprocess")
        return True


def find_target(run: str, tracking_uri: str, download_to: Path) -> Target:
    """RUN as a checkpoint path/URI (runs:/ and models:/ too, orchestrator.models, downloaded into
    `download_to`), or as an MLflow run id at `tracking_uri` whose checkpoint is its ardm.checkpoint
    tag (or, where that path is not readable here, its checkpoint artifact, downloaded into
    `download_to`)."""
    if run.startswith(("runs:/", "models:/")):
        run = local_checkpoint(run, download_to, tracking_uri)
    if is_uri(run) or Path(run).exists():
        return Target(checkpoint=run, data=trained_data(load_checkpoint(run)))
    check_tracking(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        found = client.get_run(run)
    except MlflowException:
        raise TrackingError(f"{run}: neither a checkpoint file nor a run id at {redact(tracking_uri)}") from None
    experiment = client.get_experiment(found.info.experiment_id).name
    checkpoint = found.data.tags.get(names.CHECKPOINT_TAG)
    if checkpoint is None:
        raise TrackingError(f"{redact(tracking_uri)}: run {run} has no checkpoint (tag {names.CHECKPOINT_TAG}): "
                            "not a finished trial")
    if not is_uri(checkpoint) and not Path(checkpoint).is_file():
        download_to.mkdir(parents=True, exist_ok=True)
        checkpoint = client.download_artifacts(run, names.CHECKPOINT_ARTIFACT, str(download_to))
    return Target(checkpoint=checkpoint, data=found.data.tags.get(names.DATA_TAG),
                  tracker=SweepTracker(tracking_uri, experiment), run_id=run)
