"""`ardm compress` and `ardm decompress`: lossless compression of images with a trained ARDM.

    ardm compress --checkpoint C --budget B [--policy optimal|optimal-joint|naive] [--table T]
                  [--data SPEC] [--orders 5 | --order-seed S] IN OUT
    ardm decompress --checkpoint C IN OUT

IN of compress is a .png or .npy image file (one image, or a batch in .npy), or a dataset spec
(digits, photos:8, npy:FILE, ...) whose --split is compressed into one file. The optimal policies
need a step table (--table, or estimated on training images) and the order search scores a few
random orders on training images; both take the training data from --data, else the data the
checkpoint was trained on, else IN's dataset. Coding runs on the CPU by default: decoding must
reproduce the encoder's probabilities bit for bit, which is only guaranteed on the same kind of
device with the same torch build.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ardm.budgets import POLICIES, parse_budget, resolve_budgets
from ardm.checkpoint import check_data_fits, load_checkpoint, load_model
from ardm.compression import CompressionError, budget_policy, choose_order, compress, decode_container
from ardm.compression.files import is_image_file, read_images, write_images
from ardm.config import ConfigError
from ardm.data import DataError, load_dataset
from ardm.model import ARDM
from ardm.tables import TABLE_SPLIT, StepTable, estimate_step_table, model_identity, table_images


def add_compress_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the `compress` and `decompress` commands to the `ardm` subparsers."""
    c = subparsers.add_parser("compress", help="losslessly compress images with a checkpoint's EMA model (rANS)")
    c.add_argument("--checkpoint", required=True, help="the model: a file, runs:/..., models:/... or a run id")
    c.add_argument("--budget", required=True,
                   help="network calls per image: total (S..S*D, S = stages), N/stage (S x N) or full")
    c.add_argument("--policy", default="optimal", choices=POLICIES, help="how the budget's chunks are placed")
    c.add_argument("--table", help="step_table.parquet of this model (from `ardm budgets`) for the optimal policies")
    c.add_argument("--data", help="training data spec for the order search and the step table "
                                  "(default: the checkpoint's training data, else IN's dataset)")
    c.add_argument("--table-images", type=int, default=256,
                   help="training images for the step table, spread over the split (0: all)")
    c.add_argument("--samples-per-step", type=int, default=4, help="step table samples per step")
    c.add_argument("--orders", type=int, default=5, help="random orders the order search tries")
    c.add_argument("--order-images", type=int, default=64, help="training images the order search scores")
    c.add_argument("--order-seed", type=int, help="use this order seed instead of searching")
    c.add_argument("--split", default="test", choices=["train", "test"], help="split of a dataset IN")
    c.add_argument("--batch-size", type=int, default=64, help="images per batch of network calls")
    c.add_argument("--threads", type=int, help="torch CPU threads while coding (default: torch's)")
    c.add_argument("--device", default="cpu", help="where the model runs (default cpu; decode on the same kind)")
    c.add_argument("--quiet", action="store_true", help="no progress of the step table estimate")
    c.add_argument("input", metavar="IN", help=".png or .npy image file, or a dataset spec such as photos:8")
    c.add_argument("output", metavar="OUT", help="compressed file to write")
    c.set_defaults(func=cmd_compress)

    d = subparsers.add_parser("decompress", help="decode a file written by `ardm compress`, bit-exactly")
    d.add_argument("--checkpoint", required=True, help="the model that compressed it (a file, runs:/..., models:/...)")
    d.add_argument("--device", default="cpu", help="where the model runs (the kind the encoder used)")
    d.add_argument("input", metavar="IN", help="compressed file")
    d.add_argument("output", metavar="OUT", help=".png (one image) or .npy (any number) to write")
    d.set_defaults(func=cmd_decompress)


def _input_images(source: str, split: str, model: ARDM) -> tuple[np.ndarray, str, str]:
    """(uint8 images (N, C, H, W), layout, description) of IN: an image file or a dataset split."""
    if is_image_file(source):
        images, layout = read_images(source, model.spec.shape, model.spec.num_classes)
        return images, layout, source
    if Path(source).suffix.lower() in (".png", ".npy"):
        raise DataError(f"{source}: no such file")
    data = load_dataset(source, split)
    check_data_fits(model.spec, data.shape, data.num_classes, source)
    return data.images, "nchw", f"{source} {split}"


def _training_spec(args: argparse.Namespace, model: ARDM) -> str:
    """The dataset spec whose training split feeds the order search and the step table (see the
    module docstring), checked to hold images of the model's shape."""
    spec = args.data or load_checkpoint(args.checkpoint).get("extra", {}).get("data")
    if spec is None and not is_image_file(args.input):
        spec = args.input
    if spec is None:
        raise ConfigError("--data: training data is needed for the order search and the optimal policies "
                          "(or pass --order-seed and --policy naive)")
    data = load_dataset(spec, "train")
    if data.shape != model.spec.shape:
        raise DataError(f"{spec}: images {data.shape}, the model codes {model.spec.shape}")
    return spec


def _policy(args: argparse.Namespace, model: ARDM, train: str | None) -> list[list[int]]:
    """The chunk starts per stage for --budget and --policy."""
    try:
        budget = resolve_budgets([parse_budget(args.budget)], model.num_stages, model.num_variables)[0]
    except ValueError as err:
        raise ConfigError(f"--budget: {err}") from err
    table = None
    if args.policy != "naive":
        table = _step_table(args, model, train).matrix("nll_bits")
    return budget_policy(budget, model.num_stages, model.num_variables, args.policy, table)


def _step_table(args: argparse.Namespace, model: ARDM, train: str | None) -> StepTable:
    if args.table is None:
        images, metadata = table_images(train, TABLE_SPLIT, args.table_images)
        return estimate_step_table(model, images, args.samples_per_step, metadata=metadata, progress=not args.quiet)
    try:
        table = StepTable.load(args.table)
    except (OSError, ValueError) as err:
        raise ConfigError(f"--table: {args.table}: not a readable step table ({err})") from err
    if table.metadata.get("model") != model_identity(model) or not table.is_complete():
        raise ConfigError(f"--table: {args.table} is not a complete step table of this checkpoint's model")
    return table


def cmd_compress(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=args.device)
    images, layout, what = _input_images(args.input, args.split, model)
    needs_training = args.order_seed is None or (args.policy != "naive" and args.table is None)
    train = _training_spec(args, model) if needs_training else None
    policy = _policy(args, model, train)
    if args.order_seed is None:
        order_images = load_dataset(train, "train").subset(args.order_images)[0]
        choice = choose_order(model, order_images, policy, args.orders, args.batch_size)
        scores = ", ".join(f"{seed}: {bpd:.4f}" for seed, bpd in choice.bpd.items())
        print(f"order search on {len(order_images)} training images (bpd): {scores}")
        seed = choice.seed
    else:
        seed = args.order_seed
    started = time.perf_counter()
    result = compress(model, images, policy, seed, args.batch_size, args.threads, layout)
    seconds = time.perf_counter() - started
    Path(args.output).write_bytes(result.data)
    c, h, w = model.spec.shape
    print(f"{what}: {len(images)} image(s) of {c}x{h}x{w}, budget {result.header.budget} calls ({args.policy}), "
          f"order seed {seed}")
    print(f"  payload {result.payload_bytes} bytes = {result.bpd:.4f} bpd (model NLL {result.nll_bpd:.4f} bpd), "
          f"file {len(result.data)} bytes = {result.file_bpd:.4f} bpd -> {args.output} ({seconds:.1f} s)")


def cmd_decompress(args: argparse.Namespace) -> None:
    model = load_model(args.checkpoint, map_location=args.device)
    path = Path(args.input)
    if not path.is_file():
        raise CompressionError(f"{path}: no such file")
    data = path.read_bytes()
    started = time.perf_counter()
    try:
        header, images = decode_container(model, data)
    except CompressionError as err:
        raise CompressionError(f"{path}: {err}") from err
    seconds = time.perf_counter() - started
    write_images(args.output, images, header.layout)
    bpd = 8 * len(data) / images.size
    print(f"{path}: {len(images)} image(s) decoded bit-exactly (checksum ok), budget {header.budget} calls, "
          f"{bpd:.4f} bpd -> {args.output} ({seconds:.1f} s)")
