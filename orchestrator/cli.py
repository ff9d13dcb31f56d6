"""The `ardm` command line: parsing and dispatch. Each command calls the library or the orchestrator and
prints; bad input ends with one line on stderr and exit code 2 (orchestrator/exit_codes.py)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ardm.budget_run import model_budgets, run_budgets
from ardm.budgets import format_summary
from ardm.checkpoint import load_checkpoint, load_fitting_data, load_model, trained_data
from ardm.config import ConfigError, EvalConfig, build, load_config
from ardm.data import DataError, convert_dataset
from ardm.data.dataset import SPLITS
from ardm.device import choose_device
from ardm.evaluate import estimate_nelbo
from ardm.images import full_grid
from ardm.modality import TEXT, examples_name, unit_abbreviation, unit_name
from ardm.run import run_training
from ardm.samples import sample_suffix, save_samples
from ardm.sampling import sample
from orchestrator import layout
from orchestrator.compress_cli import add_compress_parsers
from orchestrator.config import PostprocessSection, check_budgets_fit, check_data, load_sweep, trial_label
from orchestrator.exit_codes import FAILED, INTERRUPTED, OK, run_command
from orchestrator.forward import add_forward_arguments, run_forward
from orchestrator.launcher import add_install_launcher_arguments, run_install_launcher
from orchestrator.models import local_checkpoint
from orchestrator.options import (
    HelpFormatter,
    add_command,
    add_field_option,
    add_split_option,
    batch_size_option,
    checkpoint_option,
    comma_list,
    default_of,
    device_option,
    field_values,
    quiet_option,
    seed_option,
    tracking_uri_option,
)
from orchestrator.submit import add_submit_arguments, run_submit
from orchestrator.tracking import SweepTracker, existing_store, resolve_tracking_uri
from orchestrator.tracking.sync import add_sync_arguments, run_sync

BUDGET_IMAGES = 50  # `ardm budgets` measures this many test images by default: minutes on 2 CPU cores


def cmd_train(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set)
    m = run_training(config, resume=not args.fresh, device=args.device, progress=not args.quiet)
    unit = m["unit"]
    print(
        f"{config.data} {m['model']} {m['parameterization']}: train {m['train_bpd']:.4f} {unit}, "
        f"test {m['test_bpd']:.4f} ± {m['test_bpd_stderr']:.4f} {unit} ({m['test_images']} {m['examples']}), "
        f"{m['generation_steps']} generation steps"
    )
    print(f"  checkpoint: {m['checkpoint']}" + (f"\n  samples:    {m['samples']}" if "samples" in m else ""))
    return OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint, map_location=args.device)
    images = load_fitting_data(model.spec, args.data, args.split).subset(args.max_images, args.seed)[0]
    est = estimate_nelbo(model, images, args.samples_per_image, args.batch_size, seed=args.seed,
                         progress=not args.quiet, desc=f"negative ELBO of {len(images)} {args.split} images")
    modality = model.spec.modality
    print(f"{args.data} {args.split}: negative ELBO {est} {unit_abbreviation(modality)} over {est.n} "
          f"{examples_name(modality)} ({unit_name(modality)})")
    return OK


def cmd_sample(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint, map_location=args.device)
    suffix = sample_suffix(model.spec.modality)
    if Path(args.out).suffix.lower() != suffix:
        raise ConfigError(f"{args.out}: samples of a {model.spec.modality} model are written to a {suffix} file")
    if model.spec.modality == TEXT:  # one sample per line: no grid to fill, no row of real sequences
        samples = sample(model, args.sample_grid, seed=args.seed, batch_size=args.batch_size, progress=not args.quiet)
        print(save_samples(samples, model.spec, args.out))
        return OK
    count, columns = full_grid(args.sample_grid)
    if count != args.sample_grid:
        print(f"drawing {count} samples, not {args.sample_grid}: a full grid of {columns} x {count // columns}")
    data = args.data or trained_data(load_checkpoint(args.checkpoint))
    reference = None
    if data and data != "none":
        try:
            reference = load_fitting_data(model.spec, data, "test").subset(columns, args.seed)[0]
        except DataError as err:  # the grid is still worth having without its row of real images
            print(f"no row of real images: {err}")
    images = sample(model, count, seed=args.seed, batch_size=args.batch_size, progress=not args.quiet)
    title = f"{Path(args.checkpoint).name} {model.upscaler}: {count} samples, all {model.num_steps} steps"
    print(save_samples(images, model.spec, args.out, title=title, reference=reference))
    return OK


def cmd_budgets(args: argparse.Namespace) -> int:
    model = load_model(args.checkpoint, map_location=args.device)
    budgets = model_budgets(args.budgets, model, "--budgets")
    curve = run_budgets(
        model, args.data, args.out, budgets, split=args.split, max_images=args.max_images, seed=args.seed,
        table_split=args.table_split, table_images=args.table_images,
        table_samples_per_step=args.table_samples_per_step, orders_per_image=args.orders_per_image,
        sort_decreasing=args.sort_decreasing, sample_grid=args.sample_grid, progress=not args.quiet,
    )
    print(format_summary(curve, args.table_split, Path(args.out)))
    return OK


def cmd_sweep(args: argparse.Namespace) -> int:
    file = Path(args.file).absolute()
    if args.base_dir:  # relative paths of the sweep then lie there (see orchestrator/submit.py)
        os.chdir(Path(args.base_dir).expanduser())
    sweep = load_sweep(file, args.set)
    if args.dry_run:
        shape, num_classes = check_data(sweep)  # reads the data, so a dry run catches what the driver would
        check_budgets_fit(sweep, shape, num_classes)
        from orchestrator.variants import trial_configs  # imports Ray Tune (without starting Ray)

        trials = trial_configs(sweep)
        print(f"{args.file}: sweep {sweep.base.sweep.name!r}, {len(trials)} trial(s)")
        for trial in trials:
            print(f"  {trial_label(trial, sweep.spaces)}")
        return OK
    from orchestrator.sweep import format_outcome, run_sweep  # Ray is imported only when a sweep really starts

    outcome = run_sweep(sweep, resume=args.resume, verbose=args.verbose)
    print(format_outcome(outcome, sweep))
    if outcome.interrupted:
        print(f"interrupted: continue with  ardm sweep {args.file} --resume", file=sys.stderr)
        return INTERRUPTED
    return FAILED if any(r.error is not None for r in outcome.results) else OK


def cmd_postprocess(args: argparse.Namespace) -> int:
    from orchestrator.postprocess import find_target, postprocess_checkpoint  # imports Ray

    settings = build(PostprocessSection, field_values(args, PostprocessSection), "postprocess")
    out = Path(args.out or layout.default_postprocess_out(args.run))
    target = find_target(args.run, resolve_tracking_uri(args.tracking_uri), out)
    data = args.data or target.data
    if data is None:
        raise ConfigError(f"{args.run}: the checkpoint does not name its data: give --data")
    done = postprocess_checkpoint(target.checkpoint, data, str(out), settings, seed=args.seed, use_gpu=args.gpu)
    print(format_summary(done.curve, settings.table_split, done.folder))
    if target.log(done):
        print(f"logged to MLflow run {target.run_id}")
    return OK


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import build_report, default_folder, latest_sweep

    tracker = SweepTracker(existing_store(args.tracking_uri), args.experiment, create=False)
    parent = args.sweep_run or latest_sweep(tracker)
    report = build_report(tracker, parent, Path(args.out or default_folder(tracker, parent)), log=args.log)
    print(f"{len(report.rows)} trial(s); report: {report.html}")
    if args.log:
        print(f"logged to the sweep's MLflow run {parent} under report/")
    return OK


def cmd_runs(args: argparse.Namespace) -> int:
    from orchestrator.listing import experiment_rows, format_rows, trial_rows

    uri = existing_store(args.tracking_uri)
    if args.experiment is None:
        print(format_rows(experiment_rows(uri), ["experiment", "id", "sweeps"]))
        return OK
    rows = trial_rows(SweepTracker(uri, args.experiment, create=False))
    for r in rows:
        r["test bpd"] = None if r["test_bpd"] is None else f"{r['test_bpd']:.4f} ± {r['test_bpd_stderr']:.4f}"
    print(format_rows(rows, ["trial", "status", "test bpd", "run_id", "checkpoint"]))
    return OK


def cmd_convert(args: argparse.Namespace) -> int:
    print(convert_dataset(args.spec, args.out, args.rows_per_shard))
    return OK


def _add_budget_settings(parser: argparse.ArgumentParser, table_samples_flag: str, grid_flag: str,
                         grid_help: str) -> None:
    """The postprocessing settings (PostprocessSection) that `ardm budgets` and `ardm postprocess` share."""
    add_field_option(parser, PostprocessSection, "budgets", type=comma_list,
                     help="comma-separated total calls, N/stage (S x N calls) and/or full, e.g. 8,20,50/stage,full")
    add_field_option(parser, PostprocessSection, "table_split", choices=SPLITS,
                     help="split of the step table's images: never the measured test images unless asked")
    add_field_option(parser, PostprocessSection, "table_images",
                     help="images for the step table, spread over its split (0: all)")
    add_field_option(parser, PostprocessSection, "table_samples_per_step", flag=table_samples_flag,
                     help="(image, order) draws per step of the step table")
    add_field_option(parser, PostprocessSection, "orders_per_image",
                     help="random orders per image when measuring a policy's bpd")
    add_field_option(parser, PostprocessSection, "sort_decreasing", flag="--no-sort",
                     help="run the DP on the raw table instead of the table sorted decreasing (the paper's default)")
    add_field_option(parser, PostprocessSection, "sample_grid", flag=grid_flag, help=grid_help)


def parser() -> argparse.ArgumentParser:
    ardm_parser = argparse.ArgumentParser(prog="ardm", description="Autoregressive Diffusion Models",
                                          formatter_class=HelpFormatter)
    sub = ardm_parser.add_subparsers(dest="command", required=True)
    model_run = [checkpoint_option(), device_option(), quiet_option()]  # the options of a command that runs a model

    train_parser = add_command(sub, "train", "train one model from a YAML run config, then evaluate and sample",
                               [device_option(), quiet_option()])
    train_parser.add_argument("config", help="run config YAML (see configs/)")
    train_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                              help="override a config field (repeatable)")
    train_parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the output folder")
    train_parser.set_defaults(func=cmd_train)

    evaluate_parser = add_command(sub, "evaluate", "test-set negative ELBO (bpd ± stderr) of a checkpoint's EMA model",
                                  [*model_run, seed_option(), batch_size_option(default_of(EvalConfig, "batch_size"))])
    evaluate_parser.add_argument("--data", required=True, help="dataset spec, e.g. photos:8 or cifar10:/path")
    add_split_option(evaluate_parser, "split whose images are evaluated")
    add_field_option(evaluate_parser, EvalConfig, "samples_per_image",
                     help="Monte Carlo (order, step) draws per image; more draws, smaller stderr")
    add_field_option(evaluate_parser, EvalConfig, "max_images", help="images evaluated, spread over the split (0: all)")
    evaluate_parser.set_defaults(func=cmd_evaluate)

    sample_parser = add_command(sub, "sample", "draw samples from a checkpoint's EMA model into a PNG grid "
                                "(a text model: a .txt file, one sample per line)",
                                [*model_run, seed_option(), batch_size_option(default_of(sample, "batch_size"))])
    add_field_option(sample_parser, EvalConfig, "sample_grid", flag="--num",
                     help="samples to draw; images are rounded up to fill the grid's last row")
    sample_parser.add_argument("--data", help="dataset spec whose test images form the grid's last row (default: "
                               "the one the checkpoint trained on; none: no row)")
    sample_parser.add_argument("out", help="output path: .png (image model) or .txt (text model)")
    sample_parser.set_defaults(func=cmd_sample)

    budgets_parser = add_command(sub, "budgets", "step table, DP policies and measured bpd per budget (network calls)",
                                 [*model_run, seed_option()])
    budgets_parser.add_argument("--data", required=True, help="dataset spec of held-out data, e.g. photos:8")
    add_split_option(budgets_parser, "split whose bpd is measured")
    _add_budget_settings(budgets_parser, "--samples-per-step", "--samples",
                         "images per sample grid per budget below the full one (0: none; the full budget's "
                         "samples are `ardm sample`'s)")
    budgets_parser.add_argument("--max-images", type=int, default=BUDGET_IMAGES,
                                help="images whose bpd is measured, spread over the split (0: all; fewer than "
                                "postprocessing's: every policy costs its calls per image, on a CPU too)")
    budgets_parser.add_argument("--out", required=True, help="output folder (a rerun into it resumes)")
    budgets_parser.set_defaults(func=cmd_budgets)

    sweep_parser = add_command(sub, "sweep", "run a YAML sweep: Ray Tune trials of Ray Train runs, tracked in MLflow")
    sweep_parser.add_argument("file", help="sweep file (see sweeps/)")
    sweep_parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                              help="override a field (repeatable)")
    sweep_parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep from its storage")
    sweep_parser.add_argument("--dry-run", action="store_true", help="validate and list the trials; start nothing")
    sweep_parser.add_argument("--base-dir", metavar="DIR", help="resolve the sweep's relative paths (storage.path, "
                              "the default SQLite tracking file, data files) against DIR instead of the current "
                              "folder (ardm submit passes ~, the head's home, as ray submit runs there)")
    sweep_parser.add_argument("-v", "--verbose", action="store_true",
                              help="also show the Ray workers' output (each training report, Ray's internal warnings)")
    sweep_parser.set_defaults(func=cmd_sweep)

    postprocess_parser = add_command(sub, "postprocess", "step table, DP budgets, measured bpd and sample grids of a "
                                     "finished trial (MLflow run id) or checkpoint, on Ray; logged to the run",
                                     [tracking_uri_option(), seed_option()])
    postprocess_parser.add_argument("run", help="a trial's MLflow run id, or a checkpoint path")
    postprocess_parser.add_argument("--data", help="dataset spec of the held-out data (default: the one the model "
                                    "trained on)")
    _add_budget_settings(postprocess_parser, "--table-samples-per-step", "--sample-grid",
                         "images per sample grid per budget (0: none)")
    add_field_option(postprocess_parser, PostprocessSection, "table_ranges",
                     help="Ray tasks the step table is split into")
    add_field_option(postprocess_parser, PostprocessSection, "max_images",
                     help="test images whose bpd is measured, spread over the split (0: all)")
    postprocess_parser.add_argument("--gpu", action="store_true", help="one GPU per Ray task")
    postprocess_parser.add_argument("--out", help="output folder (default: postprocess/<run id or checkpoint name>)")
    postprocess_parser.set_defaults(func=cmd_postprocess)

    report_parser = add_command(sub, "report", "the budget-vs-bpd report of a sweep from MLflow (Markdown, HTML, "
                                "Parquet, PNG)", [tracking_uri_option()])
    report_parser.add_argument("experiment", help="MLflow experiment (the sweep's name unless tracking.experiment "
                               "was set)")
    report_parser.add_argument("--sweep-run", help="the sweep's parent run id (default: the experiment's latest sweep)")
    report_parser.add_argument("--out", help="output folder (default: the sweep's report folder, "
                               "<storage>/<sweep>/report, or reports/<sweep> for object storage)")
    report_parser.add_argument("--log", action="store_true",
                               help="also log the report to the sweep's MLflow run (replacing it)")
    report_parser.set_defaults(func=cmd_report)

    runs_parser = add_command(sub, "runs", "list the store's experiments, or one experiment's trials with status, "
                              "test bpd, run id and checkpoint (any of them works as --checkpoint)",
                              [tracking_uri_option()])
    runs_parser.add_argument("experiment", nargs="?", help="an experiment (default: list the experiments)")
    runs_parser.set_defaults(func=cmd_runs)

    add_compress_parsers(sub)

    sync_parser = add_command(sub, "sync", "deliver tracking calls kept in an outbox during an MLflow outage")
    add_sync_arguments(sync_parser)
    sync_parser.set_defaults(func=run_sync)

    submit_parser = add_command(sub, "submit", "run a sweep on a Ray cluster as a Ray job (Ray's job submission API)")
    add_submit_arguments(submit_parser)
    submit_parser.set_defaults(func=run_submit)

    forward_parser = add_command(sub, "forward", "hold SSH tunnels to a cluster head's Ray dashboard and MLflow "
                                 "server (they listen on the cluster's private network only) until Ctrl-C")
    add_forward_arguments(forward_parser)
    forward_parser.set_defaults(func=run_forward)

    install_launcher_parser = add_command(sub, "install-launcher", "make `python SWEEP.yaml ARGS` run `ardm sweep` "
                                          "(for ray submit)")
    add_install_launcher_arguments(install_launcher_parser)
    install_launcher_parser.set_defaults(func=run_install_launcher)

    convert_parser = add_command(sub, "convert", "write a dataset's splits as Parquet shards with a manifest")
    convert_parser.add_argument("spec", help="dataset spec, e.g. cifar10 (downloaded) or "
                                "cifar10:/data/cifar-10-python.tar.gz")
    convert_parser.add_argument("out", help="output folder (local path, or s3:// through pyarrow)")
    add_field_option(convert_parser, convert_dataset, "rows_per_shard", help="images per Parquet shard")
    convert_parser.set_defaults(func=cmd_convert)
    return ardm_parser


def _dispatch(args: argparse.Namespace) -> int:
    """Run the parsed command, with the options every command reads the same way resolved first."""
    with contextlib.ExitStack() as scope:
        if getattr(args, "checkpoint", None):  # every command's --checkpoint may name an MLflow run or model
            # A checkpoint downloaded from MLflow is the command's own copy, removed when it ends.
            scratch = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="ardm-checkpoint-")))
            args.checkpoint = local_checkpoint(args.checkpoint, scratch)
        if "device" in vars(args):
            args.device = choose_device(args.device)
        return args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_dispatch, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
