"""`ardm compress` and `ardm decompress`: lossless compression of images, or text, with a trained ARDM.

    ardm compress --checkpoint C --budget B [--policy optimal|optimal-joint|naive] [--table T]
                  [--data SPEC] [--orders 5 | --order-seed S] IN OUT
    ardm decompress --checkpoint C IN OUT

IN of compress is a .png or .npy image file (one image, or a batch in .npy), for a text model a .txt
file in the text8 alphabet (a-z and space, one optional final line break; decompressed byte for byte,
ardm.compression.text_files), or a dataset spec (digits, photos:8, pydoc, npy:FILE, ...) whose --split
is compressed into one file. The optimal policies
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

from ardm.budget_run import model_budgets
from ardm.budgets import POLICIES
from ardm.checkpoint import load_checkpoint, load_fitting_data, load_model
from ardm.compression import CompressionError, TextLayout, budget_policy, choose_order, compress, decode_container
from ardm.compression.coder import prepare_cuda_determinism
from ardm.compression.container import TEXT_LAYOUT
from ardm.compression.files import is_image_file, read_images, write_images
from ardm.compression.text_files import is_text_file, read_text_file, write_text_file
from ardm.config import ConfigError
from ardm.data import DataError, load_dataset
from ardm.modality import TEXT, examples_name, unit_abbreviation
from ardm.model import ARDM
from ardm.tables import TABLE_SPLIT, StepTable, estimate_step_table, model_identity, table_images
from orchestrator.config import CompressionSection
from orchestrator.exit_codes import OK
from orchestrator.options import (
    add_command,
    add_field_option,
    add_split_option,
    batch_size_option,
    checkpoint_option,
    default_of,
    device_option,
    quiet_option,
)

# Decoding must reproduce the encoder's probabilities bit for bit: the same kind of device, the CPU by default.
CODING_DEVICE = "cpu"
DEVICE_HELP = "where the model runs (decode on the kind of device that encoded)"


def add_compress_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the `compress` and `decompress` commands to the `ardm` subparsers."""
    compress_parser = add_command(
        subparsers, "compress", "losslessly compress images with a checkpoint's EMA model (rANS)",
        [checkpoint_option(), device_option(CODING_DEVICE, DEVICE_HELP), quiet_option(),
         batch_size_option(default_of(compress, "batch_size"))])
    compress_parser.add_argument("--budget", required=True,
                                 help="network calls per image: total (S..S*D, S = stages), N/stage (S x N) or full")
    compress_parser.add_argument("--policy", default="optimal", choices=POLICIES,
                                 help="how the budget's chunks are placed")
    compress_parser.add_argument("--table", help="step_table.parquet of this model (from `ardm budgets`) for the "
                                 "optimal policies (default: estimated on training images)")
    compress_parser.add_argument("--data", help="training data spec for the order search and the step table "
                                 "(default: the checkpoint's training data, else IN's dataset)")
    compress_parser.add_argument("--table-images", type=int, default=256,
                                 help="training images for the step table, spread over the split (0: all)")
    compress_parser.add_argument("--samples-per-step", type=int, default=4, help="step table samples per step")
    add_field_option(compress_parser, CompressionSection, "orders", help="random orders the order search tries")
    add_field_option(compress_parser, CompressionSection, "order_images",
                     help="training images the order search scores")
    compress_parser.add_argument("--order-seed", type=int, help="use this order seed instead of searching")
    add_split_option(compress_parser, "split of a dataset IN")
    compress_parser.add_argument("--threads", type=int, help="torch CPU threads while coding (default: torch's)")
    compress_parser.add_argument("input", metavar="IN",
                                 help=".png or .npy image file, .txt file (text model), or a dataset spec such as "
                                 "photos:8")
    compress_parser.add_argument("output", metavar="OUT", help="compressed file to write")
    compress_parser.set_defaults(func=cmd_compress)

    decompress_parser = add_command(
        subparsers, "decompress", "decode a file written by `ardm compress` with the checkpoint that compressed it, "
        "bit-exactly", [checkpoint_option(), device_option(CODING_DEVICE, DEVICE_HELP)])
    decompress_parser.add_argument("input", metavar="IN", help="compressed file")
    decompress_parser.add_argument("output", metavar="OUT", help=".png (one image) or .npy (any number) to write; "
                                   ".txt for a compressed text file")
    decompress_parser.set_defaults(func=cmd_decompress)


def _input_images(source: str, split: str, model: ARDM) -> tuple[np.ndarray, str, TextLayout | None, str]:
    """(uint8 images (N, C, H, W), layout, the text's layout for a .txt file, description) of IN: an
    image file, a text file or a dataset split."""
    if is_text_file(source):
        if model.spec.modality != TEXT:
            raise DataError(f"{source}: a text file needs a text model; this checkpoint's is an {model.spec.modality} "
                            "model")
        sequences, text = read_text_file(source, model.num_variables)
        return sequences, TEXT_LAYOUT, text, source
    if is_image_file(source):
        images, layout = read_images(source, model.spec.shape, model.spec.num_classes)
        return images, layout, None, source
    if Path(source).suffix.lower() in (".png", ".npy"):
        raise DataError(f"{source}: no such file")
    return load_fitting_data(model.spec, source, split).images, "nchw", None, f"{source} {split}"


def _training_spec(args: argparse.Namespace, model: ARDM) -> str:
    """The dataset spec whose training split feeds the order search and the step table (see the
    module docstring), checked to hold images of the model's shape."""
    spec = args.data or load_checkpoint(args.checkpoint).get("extra", {}).get("data")
    if spec is None and not is_image_file(args.input) and not is_text_file(args.input):
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
    budget = model_budgets([args.budget], model, "--budget")[0]
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


def cmd_compress(args: argparse.Namespace) -> int:
    prepare_cuda_determinism()  # before the model reaches a GPU, if --device names one
    model = load_model(args.checkpoint, map_location=args.device)
    images, layout, text, what = _input_images(args.input, args.split, model)
    needs_training = args.order_seed is None or (args.policy != "naive" and args.table is None)
    train = _training_spec(args, model) if needs_training else None
    policy = _policy(args, model, train)
    if args.order_seed is None:
        order_images = load_dataset(train, "train").subset(args.order_images)[0]
        choice = choose_order(model, order_images, policy, args.orders, args.batch_size)
        scores = ", ".join(f"{seed}: {bpd:.4f}" for seed, bpd in choice.bpd.items())
        modality = model.spec.modality
        print(f"order search on {len(order_images)} training {examples_name(modality)} "
              f"({unit_abbreviation(modality)}): {scores}")
        seed = choice.seed
    else:
        seed = args.order_seed
    started = time.perf_counter()
    result = compress(model, images, policy, seed, args.batch_size, args.threads, layout, text)
    seconds = time.perf_counter() - started
    Path(args.output).write_bytes(result.data)
    shape, unit = "x".join(map(str, model.spec.shape)), unit_abbreviation(model.spec.modality)
    size = f"{text.chars} characters in " if text is not None else ""
    print(f"{what}: {size}{len(images)} {examples_name(model.spec.modality)} of {shape}, budget "
          f"{result.header.budget} calls ({args.policy}), order seed {seed}")
    print(f"  payload {result.payload_bytes} bytes = {result.bpd:.4f} {unit} (model NLL {result.nll_bpd:.4f} {unit}), "
          f"file {len(result.data)} bytes = {result.file_bpd:.4f} {unit} -> {args.output} ({seconds:.1f} s)")
    if text is not None:  # the padding of the last sequence is coded too: per character of the text itself
        print(f"  file {8 * len(result.data) / max(text.chars, 1):.4f} bits per character of the text")
    return OK


def cmd_decompress(args: argparse.Namespace) -> int:
    prepare_cuda_determinism()
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
    if header.text is not None:
        write_text_file(args.output, images, header.text)
    else:
        write_images(args.output, images, header.layout)
    bpd = 8 * len(data) / images.size
    print(f"{path}: {len(images)} {examples_name(model.spec.modality)} decoded bit-exactly (checksum ok), budget "
          f"{header.budget} calls, {bpd:.4f} {unit_abbreviation(model.spec.modality)} -> {args.output} "
          f"({seconds:.1f} s)")
    return OK
