"""The sweep driver: validate, check tracking, prepare data, then Ray Tune over Ray Train trials.

Order matters: everything that can be wrong with the input (the sweep file, the data, the
tracking server) is checked before Ray starts, so a bad sweep fails in seconds with one line.

Storage layout under <storage.path>/<sweep name>/:
    data/          Parquet shards + manifest.json (converted once from data.spec)
    tune/          Ray Tune's experiment state (what `--resume` restores)
    train/<trial>/ each trial's Ray Train run: checkpoints
    sweep.json     the sweep's MLflow parent run id and tracking URI
"""

from __future__ import annotations

import json
import math
import os
from urllib.parse import urlparse

import pyarrow.fs as pafs
import ray
from ray import tune

from ardm.data import DataError, convert_dataset, parse_spec
from ardm.data.parquet import read_manifest
from ardm.storage import filesystem, write_atomic
from orchestrator.config import Sweep, SweepConfig, resolve, trial_label
from orchestrator.tracking import SweepTracker, TrackingError, check_tracking, default_tracking_uri
from orchestrator.trial import run_trial

# The trial function itself only waits on its TorchTrainer: a token share of a CPU.
TRIAL_DRIVER_CPUS = 0.01


def tracking_uri(cfg: SweepConfig) -> str:
    """The sweep's MLflow tracking URI: its own, or a SQLite store in the working directory."""
    return cfg.tracking.uri or default_tracking_uri()


def sweep_root(cfg: SweepConfig) -> str:
    return f"{cfg.storage.path}/{cfg.sweep.name}"


def prepare_data(cfg: SweepConfig) -> str:
    """The Parquet shards every worker reads: the spec itself if it is parquet:, else a one-time
    conversion into the sweep's storage (reused when its manifest is already there)."""
    spec = parse_spec(cfg.data.spec)
    if spec.kind == "parquet":
        read_manifest(spec.location)  # fail now on a missing manifest, not inside a worker
        return spec.location
    uri = f"{sweep_root(cfg)}/data"
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
    server listens there too (cluster.yaml binds 0.0.0.0); a server bound to 127.0.0.1 alone
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


def param_space(sweep: Sweep) -> dict:
    """The raw config with every search space as the matching Ray Tune sampler."""
    samplers = {"grid": tune.grid_search, "choice": tune.choice,
                "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
    return resolve(sweep.raw, {p: samplers[s.kind](list(s.values)) for p, s in sweep.spaces.items()})


def _trial_name(sweep: Sweep):
    def name(trial: tune.experiment.Trial) -> str:
        values = {}
        for path in sweep.spaces:
            node = trial.config
            for key in path:
                node = node[key]
            values[path] = node
        return f"{trial_label(values)}_{trial.trial_id}"

    return name


def _read_state(cfg: SweepConfig) -> dict:
    fs, path = filesystem(f"{sweep_root(cfg)}/sweep.json")
    if fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    return json.loads(fs.open_input_file(path).read())


def run_sweep(sweep: Sweep, resume: bool = False) -> tune.ResultGrid:
    """Run (or resume) the sweep on the Ray cluster at RAY_ADDRESS, or a local one."""
    cfg = sweep.base
    uri = tracking_uri(cfg)
    check_tracking(uri)
    state = _read_state(cfg) if resume else {}
    data_uri = prepare_data(cfg)
    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"])
        else:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance
            # One logical CPU more than the machine has: the trial drivers' token shares must not
            # keep the last worker of a full machine from being placed.
            ray.init(num_cpus=(os.cpu_count() or 1) + 1)
    tracker = SweepTracker(reachable_uri(uri), cfg.experiment)
    parent_id = tracker.start_sweep(cfg.sweep.name, sweep.raw, {"ardm.sweep_file": str(sweep.path)},
                                    run_id=state.get("parent_run_id"))
    fs, path = filesystem(f"{sweep_root(cfg)}/sweep.json")
    write_atomic(fs, path, json.dumps({"parent_run_id": parent_id, "tracking_uri": uri}).encode())
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, tracker=tracker, parent_id=parent_id, data_uri=data_uri),
        {"CPU": TRIAL_DRIVER_CPUS},
    )
    tune_path = f"{sweep_root(cfg)}/tune"
    if resume and tune.Tuner.can_restore(tune_path):
        tuner = tune.Tuner.restore(tune_path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(sweep),
            tune_config=tune.TuneConfig(
                num_samples=cfg.sweep.num_samples,
                trial_name_creator=_trial_name(sweep), trial_dirname_creator=_trial_name(sweep),
                search_alg=tune.search.BasicVariantGenerator(
                    random_state=cfg.sweep.seed, max_concurrent=max_concurrent_trials(cfg)
                ),
            ),
            run_config=tune.RunConfig(
                name="tune", storage_path=sweep_root(cfg),
                failure_config=tune.FailureConfig(max_failures=cfg.failure.trial_max_failures),
            ),
        )
    results = tuner.fit()
    finish_sweep(tracker, parent_id, results)
    return results


def finish_sweep(tracker: SweepTracker, parent_id: str, results: tune.ResultGrid) -> None:
    """Close the sweep's parent run with a summary of its trials (the report stage builds on this)."""
    failed = [r for r in results if r.error is not None]
    best = [r.metrics.get("test_bpd") for r in results if r.error is None and "test_bpd" in r.metrics]
    summary = {"trials": len(results), "trials_failed": len(failed)}
    if best:
        summary["best_test_bpd"] = min(b for b in best if math.isfinite(b))
    tracker.log_metrics(parent_id, summary)
    tracker.end_run(parent_id, "FAILED" if failed else "FINISHED",
                    reason=f"{len(failed)} of {len(results)} trials failed" if failed else None)
