"""The `ardm` command line. Bad input, or a write that runs out of space, ends with one line on stderr and exit
code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ardm.budgets import budget_curve, format_curve, parse_budget_list, resolve_budgets, save_budget_curve
from ardm.checkpoint import CheckpointError, check_data_fits, load_checkpoint, load_model, trained_data
from ardm.compression import CompressionError
from ardm.config import ConfigError, build, load_config
from ardm.data import DataError, convert_dataset, load_dataset
from ardm.device import choose_device
from ardm.evaluate import estimate_nelbo
from ardm.images import full_grid, save_grid
from ardm.model import ARDM
from ardm.progress import note
from ardm.run import run_training
from ardm.sampling import sample
from ardm.storage import OutOfSpaceError
from ardm.tables import TABLE_SPLIT, estimate_step_table, reusable_table, table_images, table_metadata
from ardm.train import NonFiniteLossError
from orchestrator import layout, names
from orchestrator.compress_cli import add_compress_parsers
from orchestrator.config import PostprocessSection, check_budgets_fit, check_data, load_sweep, trial_label
from orchestrator.forward import add_forward_arguments, run_forward
from orchestrator.launcher import add_install_launcher_arguments, run_install_launcher
from orchestrator.lock import SweepBusyError
from orchestrator.models import local_checkpoint
from orchestrator.submit import add_submit_arguments, run_submit
from orchestrator.tracking import (
    SweepTracker,
    TrackingError,
    check_tracking,
    redact,
    resolve_tracking_uri,
    sqlite_path,
)
from orchestrator.tracking.sync import add_sync_arguments, run_sync

TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)"
CHECKPOINT_HELP = ("a checkpoint file, runs:/RUN_ID/path, models:/MODEL_ID, models:/NAME/VERSION, models:/NAME@alias "
                   "or a trial's run id (MLflow: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
BUDGET_IMAGES = 50  # `ardm budgets` measures this many test images by default: minutes on 2 CPU cores
QUIET_HELP = "no progress: neither bars (on a terminal) nor a line per finished unit (otherwise)"
# One line and exit 2 for what the user must fix before a rerun: the input, or the machine (a full disk).
BAD_INPUT = (ConfigError, DataError, CheckpointError, TrackingError, CompressionError, SweepBusyError, OutOfSpaceError)


def cmd_train(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.set)
    m = run_training(config, resume=not args.fresh, device=choose_device(args.device), progress=not args.quiet)
    print(
        f"{config.data} {m['model']} {m['parameterization']}: train {m['train_bpd']:.4f} bpd, "
        f"test {m['test_bpd']:.4f} ± {m['test_bpd_stderr']:.4f} bpd ({m['test_images']} images), "
        f"{m['generation_steps']} generation steps"
    )
    print(f"  checkpoint: {m['checkpoint']}" + (f"\n  samples:    {m['samples']}" if "samples" in m else ""))


def _held_out(model: ARDM, spec: str, split: str, max_images: int, seed: int) -> np.ndarray:
    """`max_images` (0: all) images of a split, spread evenly over it (ImageDataset.subset), checked
    against the model's shape and K."""
    data = load_dataset(spec, split)
    check_data_fits(model.spec, data.shape, data.num_classes, spec)
    return data.subset(max_images, seed)[0]


def cmd_evaluate(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=choose_device(args.device))
    images = _held_out(model, args.data, args.split, args.max_images, args.seed)
    est = estimate_nelbo(model, images, args.samples_per_image, args.batch_size, seed=args.seed,
                         progress=not args.quiet, desc=f"negative ELBO of {len(images)} {args.split} images")
    print(f"{args.data} {args.split}: negative ELBO {est} bpd over {est.n} images")


def cmd_sample(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=choose_device(args.device))
    count, columns = full_grid(args.num)
    if count != args.num:
        print(f"drawing {count} samples, not {args.num}: a full grid of {columns} x {count // columns}")
    data = args.data or trained_data(load_checkpoint(args.checkpoint))
    reference = None
    if data and data != "none":
        try:
            reference = _held_out(model, data, "test", columns, args.seed)
        except DataError as err:  # the grid is still worth having without its row of real images
            print(f"no row of real images: {err}")
    images = sample(model, count, seed=args.seed, batch_size=args.batch_size, progress=not args.quiet)
    title = f"{Path(args.checkpoint).name} {model.upscaler}: {count} samples, all {model.num_steps} steps"
    print(save_grid(images, model.spec.num_classes, args.out, title=title, reference=reference))


def cmd_budgets(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=choose_device(args.device))
    images = _held_out(model, args.data, args.split, args.max_images, args.seed)
    budgets = model_budgets("--budgets", args.budgets, model)
    table_split, progress = args.table_split, not args.quiet
    out = Path(args.out)
    train, metadata = table_images(args.data, table_split, args.table_images, args.seed)
    if table_split == args.split:
        print(f"note: the step table is estimated on the {table_split} split, where bpd is measured: the measured "
              "bpd of the optimal policies is optimistically biased", file=sys.stderr)
    # A rerun into the same --out reuses what still holds: the table, each budget's estimates, the grids.
    table_path = layout.step_table(out)
    table = reusable_table(table_path, table_metadata(model, args.samples_per_step, args.seed, metadata))
    if table is None:
        table = estimate_step_table(model, train, args.samples_per_step, seed=args.seed, progress=progress,
                                    metadata=metadata)
        table.save(table_path)
    else:
        note(f"step table: estimated before, reusing {table_path}", progress)
    measured: set[int] = set()
    curve = budget_curve(model, table, images, budgets, args.orders_per_image, seed=args.seed,
                         sort_decreasing=args.sort, progress=progress, cache=str(out / "budgets"),
                         on_budget=lambda budget, _: measured.add(budget))
    paths = save_budget_curve(curve, out, title=f"{args.data} {model.upscaler}")
    # The full budget's grid is what `ardm sample` draws (S*D calls in a row): too slow to draw by default.
    for budget in [b for b in budgets if b < model.num_steps] if args.samples else []:
        grid_path = Path(layout.sample_grid(out, budget))
        if budget in measured or not grid_path.is_file():  # a grid is redrawn with its budget
            count, columns = full_grid(args.samples)
            grid = sample(model, count, policy=curve.policies[budget, "optimal"], seed=args.seed,
                          progress=progress, desc=f"sample grid, budget {budget} calls, policy optimal")
            save_grid(grid, model.spec.num_classes, grid_path, reference=images[:columns],
                      title=f"{args.data} {model.upscaler}: budget {budget} calls, optimal policy")
    print(format_curve(curve))
    print(f"step table on {table_split} images; wrote {paths['png'].parent}")


def cmd_sweep(args: argparse.Namespace) -> None:
    file = Path(args.file).absolute()
    if args.base_dir:  # relative paths of the sweep then lie there (see orchestrator/submit.py)
        os.chdir(Path(args.base_dir).expanduser())
    sweep = load_sweep(file, args.set)
    if args.dry_run:
        shape, num_classes = check_data(sweep)  # reads the data, so a dry run catches what the driver would
        check_budgets_fit(sweep, shape, num_classes)
        trials = sweep.trial_dicts()
        print(f"{args.file}: sweep {sweep.base.sweep.name!r}, {len(trials)} trial(s)")
        for trial in trials:
            print(f"  {trial_label(trial, sweep.spaces)}")
        return
    from orchestrator.sweep import run_sweep  # Ray is imported only when a sweep really starts
    from orchestrator.trial import failure_reason

    outcome = run_sweep(sweep, resume=args.resume, verbose=args.verbose)
    results = outcome.results
    print(f"\nsweep {sweep.base.sweep.name!r}: {len(results)} trial(s)")
    for result in sorted(results, key=lambda r: r.path):
        m = result.metrics or {}
        name = Path(result.path).name
        if result.error is not None:
            print(f"  {name:40} FAILED  {failure_reason(result.error)[:100]}")
        elif names.TEST_BPD in m:
            print(f"  {name:40} test {m[names.TEST_BPD]:.4f} ± {m[names.TEST_BPD_STDERR]:.4f} bpd")
        else:
            print(f"  {name:40} unfinished")
    uri = redact(resolve_tracking_uri(sweep.base.tracking.uri))  # printed: a job's log is kept
    print(f"MLflow tracking: {uri} (experiment {sweep.base.experiment!r})")
    if sqlite_path(uri) is not None:
        print(f"  open the UI:  mlflow ui --backend-store-uri {uri}   then browse http://127.0.0.1:5000")
    else:
        print(f"  open the UI:  browse {uri}")
    if outcome.report is not None:
        print(f"report: {outcome.report.html}")
    if outcome.interrupted:
        print(f"interrupted: continue with  ardm sweep {args.file} --resume", file=sys.stderr)
        return 130  # the shell's code for a run stopped by SIGINT
    return 1 if any(r.error is not None for r in results) else 0


def model_budgets(flag: str, text: str, model: ARDM) -> list[int]:
    """Total calls of a comma-separated budget list (N, N/stage, full) for a model; ConfigError naming the flag."""
    try:
        return resolve_budgets(parse_budget_list(text), model.num_stages, model.num_variables)
    except ValueError as err:
        raise ConfigError(f"{flag}: {err}") from None


def _budget_list(text: str) -> list[str]:
    """Split only: the values are checked against the model (or the section's schema), in one line."""
    return [v.strip() for v in text.split(",") if v.strip()]


def cmd_postprocess(args: argparse.Namespace) -> int:
    from orchestrator.postprocess import find_target, postprocess_checkpoint  # imports Ray

    settings = build(PostprocessSection, {
        "budgets": args.budgets, "table_split": args.table_split, "table_images": args.table_images,
        "table_samples_per_step": args.table_samples_per_step,
        "table_ranges": args.table_ranges, "orders_per_image": args.orders_per_image,
        "max_images": args.max_images, "sample_grid": args.sample_grid, "sort_decreasing": args.sort,
    }, "postprocess")
    out = Path(args.out or layout.default_postprocess_out(args.run))
    target = find_target(args.run, resolve_tracking_uri(args.tracking_uri), out)
    data = args.data or target.data
    if data is None:
        raise ConfigError(f"{args.run}: the checkpoint does not name its data: give --data")
    done = postprocess_checkpoint(target.checkpoint, data, str(out), settings, seed=args.seed, use_gpu=args.gpu)
    print(format_curve(done.curve))
    print(f"step table on {settings.table_split} images; wrote {done.folder}")
    if target.run_id is not None:
        target.tracker.log_metrics(target.run_id, done.metrics)
        target.tracker.log_curves(target.run_id, done.curves)
        target.tracker.log_artifact(target.run_id, done.folder, names.POSTPROCESS_ARTIFACTS)
        print(f"logged to MLflow run {target.run_id}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import build_report, default_folder, latest_sweep

    tracker = SweepTracker(_existing_store(args.tracking_uri), args.experiment, create=False)
    parent = args.sweep_run or latest_sweep(tracker)
    report = build_report(tracker, parent, Path(args.out or default_folder(tracker, parent)), log=args.log)
    print(f"{len(report.rows)} trial(s); report: {report.html}")
    if args.log:
        print(f"logged to the sweep's MLflow run {parent} under report/")
    return 0


def _existing_store(tracking_uri: str | None) -> str:
    """The tracking URI in the usual order, checked to name a store that exists and answers."""
    uri = resolve_tracking_uri(tracking_uri)
    if (db := sqlite_path(uri)) is not None and not db.is_file():
        raise TrackingError(f"{uri}: no MLflow store there (give --tracking-uri, or set MLFLOW_TRACKING_URI)")
    check_tracking(uri)
    return uri


def cmd_runs(args: argparse.Namespace) -> int:
    from orchestrator.listing import experiment_rows, format_rows, trial_rows

    uri = _existing_store(args.tracking_uri)
    if args.experiment is None:
        print(format_rows(experiment_rows(uri), ["experiment", "id", "sweeps"]))
        return 0
    rows = trial_rows(SweepTracker(uri, args.experiment, create=False))
    for r in rows:
        r["test bpd"] = None if r["test_bpd"] is None else f"{r['test_bpd']:.4f} ± {r['test_bpd_stderr']:.4f}"
    print(format_rows(rows, ["trial", "status", "test bpd", "run_id", "checkpoint"]))
    return 0


def cmd_convert(args: argparse.Namespace) -> None:
    print(convert_dataset(args.spec, args.out, args.rows_per_shard))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ardm", description="Autoregressive Diffusion Models")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one model from a YAML run config, then evaluate and sample")
    t.add_argument("config", help="run config YAML (see configs/)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the output folder")
    t.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    t.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test-set negative ELBO (bpd ± stderr) of a checkpoint's EMA model")
    e.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    e.add_argument("--data", required=True, help="dataset spec, e.g. photos:8 or cifar10:/path")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--samples-per-image", type=int, default=4)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--max-images", type=int, default=0, help="0: all")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device")
    e.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="draw samples from a checkpoint's EMA model into a PNG grid")
    s.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    s.add_argument("--num", type=int, default=16, help="samples; rounded up to fill the grid's last row")
    s.add_argument("--data", help="dataset spec whose test images form the grid's last row (default: the one the "
                   "checkpoint trained on; none: no row)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device")
    s.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    s.add_argument("out", help="output PNG path")
    s.set_defaults(func=cmd_sample)

    b = sub.add_parser("budgets", help="step table, DP policies and measured bpd per budget (network calls)")
    b.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    b.add_argument("--data", required=True, help="dataset spec of held-out data, e.g. photos:8")
    b.add_argument("--split", default="test", choices=["train", "test"], help="split whose bpd is measured")
    b.add_argument("--table-split", default=TABLE_SPLIT, choices=["train", "test"],
                   help="split of the step table's images: never the measured ones unless asked")
    b.add_argument("--table-images", type=int, default=0, help="images for the step table, spread over its split "
                   "(0: all)")
    b.add_argument("--budgets", default="full",
                   help="comma-separated total calls, N/stage (S x N calls) or full, e.g. 10,20,50/stage,full")
    b.add_argument("--samples-per-step", type=int, default=16, help="table samples per step")
    b.add_argument("--orders-per-image", type=int, default=1, help="orders per image when measuring a policy")
    b.add_argument("--max-images", type=int, default=BUDGET_IMAGES, help="images whose bpd is measured, spread over "
                   f"the split (0: all; default {BUDGET_IMAGES}: every policy costs its calls per image, on a CPU too)")
    b.add_argument("--no-sort", dest="sort", action="store_false",
                   help="run the DP on the raw table instead of the table sorted decreasing (the paper's default)")
    b.add_argument("--samples", type=int, default=16, help="images per sample grid per budget below the full one "
                   "(0: none; the full budget's samples are `ardm sample`'s)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device")
    b.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    b.add_argument("--out", required=True, help="output folder")
    b.set_defaults(func=cmd_budgets)

    w = sub.add_parser("sweep", help="run a YAML sweep: Ray Tune trials of Ray Train runs, tracked in MLflow")
    w.add_argument("file", help="sweep file (see sweeps/)")
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    w.add_argument("--resume", action="store_true", help="continue an interrupted sweep from its storage")
    w.add_argument("--dry-run", action="store_true", help="validate and list the trials; start nothing")
    w.add_argument("--base-dir", metavar="DIR", help="resolve the sweep's relative paths (storage.path, the default "
                   "SQLite tracking file, data files) against DIR instead of the current folder (ardm submit "
                   "passes ~, the head's home, as ray submit runs there)")
    w.add_argument("-v", "--verbose", action="store_true",
                   help="also show the Ray workers' output (each training report, Ray's internal warnings)")
    w.set_defaults(func=cmd_sweep)

    pp = sub.add_parser("postprocess", help="step table, DP budgets, measured bpd and sample grids of a finished "
                        "trial (MLflow run id) or checkpoint, on Ray; logged to the run")
    pp.add_argument("run", help="a trial's MLflow run id, or a checkpoint path")
    pp.add_argument("--budgets", type=_budget_list, default=["full"],
                    help="comma-separated total calls, N/stage (S x N calls) and/or full, e.g. 8,20,50/stage,full")
    pp.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    pp.add_argument("--data", help="dataset spec of the held-out data (default: the one the model trained on)")
    pp.add_argument("--table-split", default=TABLE_SPLIT, choices=["train", "test"],
                    help="split of the step table's images (the measured test images only if asked)")
    pp.add_argument("--table-images", type=int, default=0, help="images for the step table (0: all)")
    pp.add_argument("--table-samples-per-step", type=int, default=16)
    pp.add_argument("--table-ranges", type=int, default=4, help="Ray tasks the step table is split into")
    pp.add_argument("--orders-per-image", type=int, default=1)
    pp.add_argument("--max-images", type=int, default=0, help="test images used (0: all)")
    pp.add_argument("--sample-grid", type=int, default=16, help="images per sample grid per budget (0: none)")
    pp.add_argument("--no-sort", dest="sort", action="store_false", help="DP on the raw table, not sorted decreasing")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--gpu", action="store_true", help="one GPU per Ray task")
    pp.add_argument("--out", help="output folder (default: postprocess/<run id or checkpoint name>)")
    pp.set_defaults(func=cmd_postprocess)

    r = sub.add_parser("report", help="the budget-vs-bpd report of a sweep from MLflow (Markdown, HTML, Parquet, PNG)")
    r.add_argument("experiment", help="MLflow experiment (the sweep's name unless tracking.experiment was set)")
    r.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    r.add_argument("--sweep-run", help="the sweep's parent run id (default: the experiment's latest sweep)")
    r.add_argument("--out", help="output folder (default: the sweep's report folder, <storage>/<sweep>/report, "
                   "or reports/<sweep> for object storage)")
    r.add_argument("--log", action="store_true", help="also log the report to the sweep's MLflow run (replacing it)")
    r.set_defaults(func=cmd_report)

    runs = sub.add_parser("runs", help="list the store's experiments, or one experiment's trials with status, "
                          "test bpd, run id and checkpoint (any of them works as --checkpoint)")
    runs.add_argument("experiment", nargs="?", help="an experiment (default: list the experiments)")
    runs.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    runs.set_defaults(func=cmd_runs)

    add_compress_parsers(sub)

    y = sub.add_parser("sync", help="deliver tracking calls kept in an outbox during an MLflow outage")
    add_sync_arguments(y)
    y.set_defaults(func=run_sync)

    j = sub.add_parser("submit", help="run a sweep on a Ray cluster as a Ray job (Ray's job submission API)")
    add_submit_arguments(j)
    j.set_defaults(func=run_submit)

    forward = sub.add_parser("forward", help="hold SSH tunnels to a cluster head's Ray dashboard and MLflow server "
                             "(they listen on the cluster's private network only) until Ctrl-C")
    add_forward_arguments(forward)
    forward.set_defaults(func=run_forward)

    i = sub.add_parser("install-launcher", help="make `python SWEEP.yaml ARGS` run `ardm sweep` (for ray submit)")
    add_install_launcher_arguments(i)
    i.set_defaults(func=run_install_launcher)

    d = sub.add_parser("convert", help="write a dataset's splits as Parquet shards with a manifest")
    d.add_argument("spec", help="dataset spec, e.g. cifar10 (downloaded) or cifar10:/data/cifar-10-python.tar.gz")
    d.add_argument("out", help="output folder (local path, or s3:// through pyarrow)")
    d.add_argument("--rows-per-shard", type=int, default=10000)
    d.set_defaults(func=cmd_convert)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if getattr(args, "checkpoint", None):  # every command's --checkpoint may name an MLflow run or model
            args.checkpoint = local_checkpoint(args.checkpoint)
        return args.func(args) or 0
    except BAD_INPUT as err:
        print(f"ardm: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"ardm: training stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
