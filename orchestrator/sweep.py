"""The sweep driver: validate, check tracking, prepare data, then Ray Tune over Ray Train trials.

Order matters: everything that can be wrong with the input (the sweep file, the data, the
tracking server) is checked before Ray starts, so a bad sweep fails in seconds with one line.

Where the sweep's files go (data, Tune state, checkpoints, post-processing, sweep.json, the lock,
the outbox, the report): orchestrator/layout.py.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import ray
from ray import tune

from ardm.data import DataError, convert_dataset, parse_spec
from ardm.data.parquet import read_manifest
from ardm.modality import IMAGE, unit_abbreviation
from ardm.storage import filesystem, read_json, write_atomic
from orchestrator import layout, names
from orchestrator.cluster import connect_ray
from orchestrator.config import Sweep, SweepConfig, check_budgets_fit, check_data, trial_label
from orchestrator.lock import acquire
from orchestrator.messages import describe
from orchestrator.report import Report, build_report
from orchestrator.tracking import (
    SweepTracker,
    TrackingError,
    check_tracking,
    redact,
    resolve_tracking_uri,
    sqlite_path,
)
from orchestrator.trial import FINISHED_CHECKPOINT, failure_reason, run_trial
from orchestrator.variants import param_space, variant_generator
from orchestrator.worker import PROGRESS_COLUMNS

# The trial function itself only waits on its TorchTrainer: a token share of a CPU.
TRIAL_DRIVER_CPUS = 0.01


def prepare_data(cfg: SweepConfig) -> str:
    """The Parquet shards every worker reads: the spec itself if it is parquet:, else a one-time
    conversion into the sweep's storage (reused when its manifest is already there)."""
    spec = parse_spec(cfg.data.spec)
    if spec.kind == "parquet":
        read_manifest(spec.location)  # fail now on a missing manifest, not inside a worker
        return spec.location
    uri = layout.data_folder(cfg)
    try:
        if read_manifest(uri).get("source") == cfg.data.spec:
            return uri
    except DataError:
        pass
    convert_dataset(cfg.data.spec, uri, cfg.data.rows_per_shard)
    return uri


def reachable_uri(uri: str) -> str:
    """The tracking URI as workers on other nodes must use it.

    A server on localhost is named by this node's IP when the cluster has other nodes and the
    server listens there too (a server bound to 0.0.0.0); a server bound to 127.0.0.1 alone
    only serves this machine, as in a local multi-node test cluster, and keeps its URI.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https") and parsed.hostname in ("localhost", "127.0.0.1") and len(ray.nodes()) > 1:
        public = uri.replace(parsed.hostname, ray.util.get_node_ip_address(), 1)
        try:
            check_tracking(public, timeout=2.0)
            return public
        except TrackingError:
            pass
    return uri


def max_concurrent_trials(cfg: SweepConfig) -> int:
    """The sweep's setting, or as many trials as the cluster's CPUs and GPUs hold at once."""
    if cfg.sweep.max_concurrent_trials:
        return cfg.sweep.max_concurrent_trials
    total = ray.cluster_resources()
    r = cfg.resources
    fits = [total.get("CPU", 0) // (r.workers_per_trial * r.cpus_per_worker + TRIAL_DRIVER_CPUS)]
    if r.use_gpu:
        fits.append(total.get("GPU", 0) // (r.workers_per_trial * r.gpus_per_worker))
    return max(1, int(min(fits)))


def _trial_name(sweep: Sweep):
    def name(trial: tune.experiment.Trial) -> str:
        return f"{trial_label(trial.config, sweep.spaces)}_{trial.trial_id}"

    return name


def run_sweep(sweep: Sweep, resume: bool = False, verbose: bool = False) -> SweepOutcome:
    """Run (or resume) the sweep on the Ray cluster at RAY_ADDRESS, or a local one; `verbose` shows
    the Ray workers' output as well (orchestrator.cluster.connect_ray)."""
    cfg = sweep.base
    uri = resolve_tracking_uri(cfg.tracking.uri)
    try:
        check_tracking(uri)
    except TrackingError as err:
        # Name where the URI came from: the file, or else the environment or the default (the error names the URI).
        raise TrackingError(f"{sweep.path}: tracking.uri: {err}" if cfg.tracking.uri else str(err)) from None
    shape, num_classes = check_data(sweep)
    check_budgets_fit(sweep, shape, num_classes)
    with acquire(cfg.storage.path, cfg.sweep.name):  # one driver per sweep: a second one ends here, exit 2
        return _run_locked(sweep, uri, resume, verbose)


def progress_reporter(sweep: Sweep, verbose: bool) -> tune.CLIReporter:
    """Tune's trial table: one line per trial with its searched values and PROGRESS_COLUMNS (step,
    loss, bpd, images/s, ETA), every 30 s and at each trial's end; with `verbose`, each report too."""
    # Tune's default console (RAY_AIR_NEW_OUTPUT=1) ignores a reporter and shows at most four
    # metrics of its own choosing; the reporter it documents for chosen columns needs this switch.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    searched = {"/".join(path): path[-1] for path in sweep.spaces}  # Tune looks nested keys up by "/"
    return tune.CLIReporter(metric_columns=PROGRESS_COLUMNS, parameter_columns=searched, max_report_frequency=30,
                            print_intermediate_tables=True)


def _run_locked(sweep: Sweep, uri: str, resume: bool, verbose: bool) -> SweepOutcome:
    cfg = sweep.base
    state = (read_json(layout.state_file(cfg)) or {}) if resume else {}
    data_uri = prepare_data(cfg)
    connect_ray(verbose)
    tracker = SweepTracker(reachable_uri(uri), cfg.experiment, outbox=layout.sweep_outbox(cfg))
    parent_id = tracker.start_sweep(cfg.sweep.name, sweep.raw, {names.SWEEP_FILE_TAG: str(sweep.path)},
                                    run_id=state.get("parent_run_id"))
    fs, path = filesystem(layout.state_file(cfg))
    write_atomic(fs, path, json.dumps({"parent_run_id": parent_id, "tracking_uri": redact(uri)}).encode())
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, tracker=tracker, parent_id=parent_id, data_uri=data_uri,
                             searched=list(sweep.spaces)),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    reporter = progress_reporter(sweep, verbose)
    if resume and tune.Tuner.can_restore(layout.tune_folder(cfg)):
        tuner = tune.Tuner.restore(layout.tune_folder(cfg), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep),
            tune_config=tune.TuneConfig(
                num_samples=cfg.sweep.num_samples,
                trial_name_creator=_trial_name(sweep), trial_dirname_creator=_trial_name(sweep),
                search_alg=variant_generator(sweep, max_concurrent_trials(cfg)),
            ),
            run_config=tune.RunConfig(
                name=layout.TUNE_NAME, storage_path=layout.sweep_root(cfg),
                failure_config=tune.FailureConfig(max_failures=cfg.failure.trial_max_failures),
                progress_reporter=reporter, verbose=2 if verbose else 1,
            ),
        )
    results = tuner.fit()  # returns (state saved) on SIGINT too: unfinished trials tell
    unfinished = [r for r in results if unfinished_trial(r)]
    report = finish_sweep(tracker, parent_id, results, layout.report_folder(cfg.storage.path, cfg.sweep.name),
                          str(sweep.path), len(unfinished))
    unit = unit_abbreviation(read_manifest(data_uri).get("modality", IMAGE))
    return SweepOutcome(results=results, report=report, interrupted=bool(unfinished), unit=unit)


def unfinished_trial(result: tune.Result) -> bool:
    """Whether a trial neither failed nor finished (its training or post-processing was interrupted):
    only a finished trial's last result holds FINISHED_CHECKPOINT."""
    return result.error is None and FINISHED_CHECKPOINT not in (result.metrics or {})


@dataclass
class SweepOutcome:
    """Tune's results, the sweep report (None if it could not be written: see the warning), and
    whether the sweep was interrupted with trials unfinished (`--resume` continues it)."""

    results: tune.ResultGrid
    report: Report | None
    interrupted: bool = False
    unit: str = unit_abbreviation(IMAGE)  # of the trials' test_bpd: bpd, or bpc for text


def format_outcome(outcome: SweepOutcome, sweep: Sweep) -> str:
    """What `ardm sweep` prints at the end: each trial's test bpd (or why it failed), where the
    MLflow runs are and how to open them, and the report."""
    lines = [f"\nsweep {sweep.base.sweep.name!r}: {len(outcome.results)} trial(s)"]
    for result in sorted(outcome.results, key=lambda r: r.path):
        m, name = result.metrics or {}, Path(result.path).name
        if result.error is not None:
            lines.append(f"  {name:40} FAILED  {failure_reason(result.error)[:100]}")
        elif unfinished_trial(result):
            lines.append(f"  {name:40} unfinished")
        else:
            lines.append(f"  {name:40} test {m[names.TEST_BPD]:.4f} ± {m[names.TEST_BPD_STDERR]:.4f} {outcome.unit}")
    uri = redact(resolve_tracking_uri(sweep.base.tracking.uri))  # printed: a job's log is kept
    lines.append(f"MLflow tracking: {uri} (experiment {sweep.base.experiment!r})")
    if sqlite_path(uri) is not None:
        lines.append(f"  open the UI:  mlflow ui --backend-store-uri {uri}   then browse http://127.0.0.1:5000")
    else:
        lines.append(f"  open the UI:  browse {uri}")
    if outcome.report is not None:
        lines.append(f"report: {outcome.report.html}")
    return "\n".join(lines)


def finish_sweep(
    tracker: SweepTracker, parent_id: str, results: tune.ResultGrid, folder: Path, sweep_file: str, unfinished: int
) -> Report | None:
    """Close the sweep's parent run with a summary of its trials and the sweep report: FINISHED,
    FAILED (some trial failed) or KILLED (interrupted, `unfinished` trials left to resume)."""
    failed = [r for r in results if r.error is not None]
    best = [r.metrics[names.TEST_BPD] for r in results
            if r.error is None and math.isfinite((r.metrics or {}).get(names.TEST_BPD, math.nan))]
    summary = {names.TRIALS: len(results), names.TRIALS_FAILED: len(failed)}
    if best:
        summary[names.BEST_TEST_BPD] = min(best)
    tracker.log_metrics(parent_id, summary)
    try:
        report = build_report(tracker, parent_id, folder)
    except Exception as err:  # the trials' results are all in MLflow; `ardm report` can retry
        warnings.warn(f"sweep report not written ({describe(err)}); "
                      f"retry with: ardm report {tracker.experiment}", stacklevel=2)
        report = None
    if unfinished:
        tracker.end_run(parent_id, "KILLED", reason=f"interrupted with {unfinished} unfinished trial(s); "
                        f"continue with: ardm sweep {sweep_file} --resume")
    else:
        tracker.end_run(parent_id, "FAILED" if failed else "FINISHED",
                        reason=f"{len(failed)} of {len(results)} trials failed" if failed else None)
    if not tracker.flush():  # MLflow still down: what trials and workers kept stays in the outbox
        warnings.warn(f"MLflow unreachable at the end of the sweep; tracking calls are kept in "
                      f"{tracker.outbox.folder}; deliver them with: ardm sync --outbox {tracker.outbox.folder}",
                      stacklevel=2)
    return report
