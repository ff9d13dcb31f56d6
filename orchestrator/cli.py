"""The `ardm` command line. Bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from ardm.budgets import budget_curve, check_budgets, save_budget_curve
from ardm.checkpoint import CheckpointError, load_model
from ardm.config import ConfigError, load_config
from ardm.data import DataError, convert_dataset, load_dataset
from ardm.evaluate import estimate_nelbo
from ardm.images import save_grid
from ardm.run import run_training
from ardm.sampling import sample
from ardm.tables import estimate_step_table
from ardm.train import NonFiniteLossError
from orchestrator.config import load_sweep, trial_label
from orchestrator.launcher import add_install_launcher_arguments, run_install_launcher
from orchestrator.submit import add_submit_arguments, run_submit
from orchestrator.tracking import TrackingError

BAD_INPUT = (ConfigError, DataError, CheckpointError, TrackingError)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def _device(name: str | None) -> str:
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def cmd_train(args: argparse.Namespace) -> None:
    config = load_config(args.config, args.set)
    m = run_training(config, resume=not args.fresh, device=_device(args.device))
    print(
        f"{config.data} {m['model']} {m['parameterization']}: train {m['train_bpd']:.4f} bpd, "
        f"test {m['test_bpd']:.4f} ± {m['test_bpd_stderr']:.4f} bpd ({m['test_images']} images), "
        f"{m['generation_steps']} generation steps"
    )
    print(f"  checkpoint: {m['checkpoint']}" + (f"\n  samples:    {m['samples']}" if "samples" in m else ""))


def cmd_evaluate(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=_device(args.device))
    data = load_dataset(args.data, args.split)
    images = data.images[: args.max_images or None]
    est = estimate_nelbo(model, images, args.samples_per_image, args.batch_size, seed=args.seed, progress=True)
    print(f"{args.data} {args.split}: negative ELBO {est} bpd over {est.n} images")


def cmd_sample(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=_device(args.device))
    images = sample(model, args.num, seed=args.seed, batch_size=args.batch_size, progress=True)
    print(save_grid(images, model.spec.num_classes, args.out))


def cmd_budgets(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=_device(args.device))
    data = load_dataset(args.data, args.split)
    images = data.images[: args.max_images or None]
    out = Path(args.out)
    table = estimate_step_table(model, images, args.samples_per_step, seed=args.seed, progress=True,
                                metadata={"data": args.data, "split": args.split})
    table.save(str(out / "step_table.parquet"))
    budgets = args.budgets or [model.num_steps]
    try:
        check_budgets(budgets, model.num_stages, model.num_variables)
    except ValueError as err:
        raise ConfigError(f"--budgets: {err}") from err
    curve = budget_curve(model, table, images, budgets, args.orders_per_image, seed=args.seed,
                         sort_decreasing=args.sort, progress=True)
    paths = save_budget_curve(curve, out, title=f"{args.data} {model.upscaler}")
    print(f"{'budget':>7} {'policy':>14} {'calls':>6} {'predicted':>17} {'measured':>17}")
    for r in curve.rows:
        print(f"{r['budget']:>7} {r['policy']:>14} {r['calls']:>6} {r['predicted_bpd']:>8.4f} ± "
              f"{r['predicted_stderr']:.4f} {r['measured_bpd']:>8.4f} ± {r['measured_stderr']:.4f}")
    print(f"full-step ELBO {curve.full_elbo[0]:.4f} ± {curve.full_elbo[1]:.4f} bpd; wrote {paths['png'].parent}")
    if args.samples:
        for (budget, name), policy in curve.policies.items():
            if name == "optimal":
                grid = sample(model, args.samples, policy=policy, seed=args.seed)
                save_grid(grid, model.spec.num_classes, out / f"samples_budget_{budget}.png")


def cmd_sweep(args: argparse.Namespace) -> None:
    sweep = load_sweep(args.file, args.set)
    if args.dry_run:
        trials = sweep.trial_dicts()
        print(f"{args.file}: sweep {sweep.base.sweep.name!r}, {len(trials)} trial(s)")
        for trial in trials:
            values = {p: _get(trial, p) for p in sweep.spaces}
            print(f"  {trial_label(values)}")
        return
    from orchestrator.sweep import run_sweep, tracking_uri  # Ray is imported only when a sweep really starts

    results = run_sweep(sweep, resume=args.resume)
    print(f"\nsweep {sweep.base.sweep.name!r}: {len(results)} trial(s)")
    for result in sorted(results, key=lambda r: r.path):
        m = result.metrics or {}
        name = Path(result.path).name
        if result.error is not None:
            print(f"  {name:40} FAILED  {str(result.error).splitlines()[0][:80]}")
        elif "test_bpd" in m:
            print(f"  {name:40} test {m['test_bpd']:.4f} ± {m['test_bpd_stderr']:.4f} bpd")
        else:
            print(f"  {name:40} unfinished")
    uri = tracking_uri(sweep.base)
    print(f"MLflow tracking: {uri} (experiment {sweep.base.experiment!r})")
    if uri.startswith("sqlite:"):
        print(f"  open the UI:  mlflow ui --backend-store-uri {uri}   then browse http://127.0.0.1:5000")
    else:
        print(f"  open the UI:  browse {uri}")
    return 1 if any(r.error is not None for r in results) else 0


def _get(config: dict, path: tuple[str, ...]) -> object:
    for key in path:
        config = config[key]
    return config


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
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test-set negative ELBO (bpd ± stderr) of a checkpoint's EMA model")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True, help="dataset spec, e.g. photos:8 or cifar10:/path")
    e.add_argument("--split", default="test", choices=["train", "test"])
    e.add_argument("--samples-per-image", type=int, default=4)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--max-images", type=int, default=0, help="0: all")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("sample", help="draw samples from a checkpoint's EMA model into a PNG grid")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=int, default=16)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device")
    s.add_argument("out", help="output PNG path")
    s.set_defaults(func=cmd_sample)

    b = sub.add_parser("budgets", help="step table, DP policies and measured bpd per budget (network calls)")
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--data", required=True, help="dataset spec of held-out data, e.g. photos:8")
    b.add_argument("--split", default="test", choices=["train", "test"])
    b.add_argument("--budgets", type=_int_list, default=[], help="comma-separated, e.g. 10,20,50 (default: all steps)")
    b.add_argument("--samples-per-step", type=int, default=16, help="table samples per step")
    b.add_argument("--orders-per-image", type=int, default=1, help="orders per image when measuring a policy")
    b.add_argument("--max-images", type=int, default=0, help="0: all")
    b.add_argument("--no-sort", dest="sort", action="store_false",
                   help="run the DP on the raw table instead of the table sorted decreasing (the paper's default)")
    b.add_argument("--samples", type=int, default=16, help="images per sample grid per budget (0: none)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device")
    b.add_argument("--out", required=True, help="output folder")
    b.set_defaults(func=cmd_budgets)

    w = sub.add_parser("sweep", help="run a YAML sweep: Ray Tune trials of Ray Train runs, tracked in MLflow")
    w.add_argument("file", help="sweep file (see sweeps/)")
    w.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field")
    w.add_argument("--resume", action="store_true", help="continue an interrupted sweep from its storage")
    w.add_argument("--dry-run", action="store_true", help="validate and list the trials; start nothing")
    w.set_defaults(func=cmd_sweep)

    j = sub.add_parser("submit", help="run a sweep on a Ray cluster as a Ray job (Ray's job submission API)")
    add_submit_arguments(j)
    j.set_defaults(func=run_submit)

    i = sub.add_parser("install-launcher", help="make `python SWEEP.yaml ARGS` run `ardm sweep` (for ray submit)")
    add_install_launcher_arguments(i)
    i.set_defaults(func=run_install_launcher)

    d = sub.add_parser("convert", help="write a dataset's splits as Parquet shards with a manifest")
    d.add_argument("spec", help="dataset spec, e.g. cifar10:/data/cifar-10-python.tar.gz")
    d.add_argument("out", help="output folder (local path, or s3:// through pyarrow)")
    d.add_argument("--rows-per-shard", type=int, default=10000)
    d.set_defaults(func=cmd_convert)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except BAD_INPUT as err:
        print(f"ardm: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"ardm: training stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
