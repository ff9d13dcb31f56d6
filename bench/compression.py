"""Lossless compression with ARDMs against PNG and WebP-lossless, on the embedded photo patches.

For each model (--checkpoint, repeatable; without one, a cpu-tiny order-agnostic ARDM is trained
for --train-steps on the data's train split) and each budget (total network calls per image; the
DP policy on a step table estimated on training images, the budget split evenly over stages),
compresses the first --images test images into one container, decodes them, checks the round trip
is bit-exact, and reports: payload bits per dimension (each image's own rANS stream), the model's
NLL under the same order and policy, the whole file (header included) per dimension, and encode /
decode throughput (images per second; the decoder makes the same network calls as the encoder).
The order is chosen once per model as in the paper: the best of --orders random orders on
--order-images training images, scored under the policy of --order-budget.

Baselines code the same images with Pillow: PNG (optimize, level 9) and WebP lossless (method 6),
each image as its own file (per-image bpd) and all images tiled into one mosaic (one-file bpd).

    python bench/compression.py [--checkpoint C ...] [--data photos:8] [--images 64]
                                [--budgets 4,20,50,100,192] [--out bench/results/compression.json]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ardm.budgets import split_evenly
from ardm.checkpoint import load_model
from ardm.compression import budget_policy, choose_order, compress, decompress
from ardm.compression.baselines import CODECS, encode, to_pil
from ardm.data import load_dataset
from ardm.model import ARDM, ModelSpec, build_ardm
from ardm.networks import get_preset
from ardm.tables import estimate_step_table
from ardm.train import TrainConfig, train


def trained_model(train_images: np.ndarray, num_classes: int, steps: int) -> ARDM:
    """A cpu-tiny order-agnostic ARDM trained for `steps` steps (EMA weights)."""
    spec = ModelSpec(shape=train_images.shape[1:], num_classes=num_classes, branching=num_classes,
                     parameterization="data", network=get_preset("cpu-tiny").to_dict())
    torch.manual_seed(0)
    config = TrainConfig(steps=steps, batch_size=64, learning_rate=1e-3, ema_decay=0.99, checkpoint_every=10**6)
    return train(build_ardm(spec), train_images, config, progress=False).ema.eval()


def bench_model(model: ARDM, name: str, train_images: np.ndarray, images: np.ndarray,
                args: argparse.Namespace) -> dict[str, Any]:
    s, d = model.num_stages, model.num_variables
    table = estimate_step_table(model, train_images[: args.table_images], args.samples_per_step).matrix()
    budgets = [b for b in args.budgets if s <= b <= s * d] or [s * d]
    order_policy = budget_policy(min(max(args.order_budget, s), s * d), s, d, "optimal", table)
    choice = choose_order(model, train_images[: args.order_images], order_policy, args.orders, args.batch_size)
    rows = []
    for budget in budgets:
        policy = budget_policy(budget, s, d, "optimal", table)
        started = time.perf_counter()
        result = compress(model, images, policy, choice.seed, args.batch_size)
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        exact = bool(np.array_equal(decompress(model, result.data), images))
        decode_s = time.perf_counter() - started
        rows.append({
            "budget": budget, "calls_per_stage": split_evenly(budget, s), "payload_bpd": result.bpd,
            "nll_bpd": result.nll_bpd, "file_bpd": result.file_bpd, "file_bytes": len(result.data),
            "overhead_bits_per_image": float((result.image_bits - result.nll_bits).mean()),
            "encode_s": encode_s, "decode_s": decode_s, "encode_images_per_s": len(images) / encode_s,
            "decode_images_per_s": len(images) / decode_s, "bit_exact": exact,
        })
        r = rows[-1]
        print(f"{name:>22} {budget:>6} {r['payload_bpd']:>8.4f} {r['nll_bpd']:>8.4f} {r['file_bpd']:>8.4f}"
              f" {r['encode_images_per_s']:>9.1f} {r['decode_images_per_s']:>9.1f}  {exact}", flush=True)
    return {"name": name, "stages": s, "order_seed": choice.seed, "order_bpd": choice.bpd,
            "order_budget": int(sum(len(p) for p in order_policy)), "rows": rows}


def mosaic(images: np.ndarray) -> np.ndarray:
    """All images (N, C, H, W) tiled row by row into one (rows*H, cols*W, C) image; empty tiles are 0."""
    n, c, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * cols, h, w, c), dtype=np.uint8)
    grid[:n] = images.transpose(0, 2, 3, 1)
    return grid.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)


def bench_codec(name: str, options: dict[str, Any], images: np.ndarray) -> dict[str, Any]:
    """Per-image and one-file bpd, throughput, and a lossless check of a Pillow codec."""
    d = images[0].size
    started = time.perf_counter()
    files = []
    for image in images:
        files.append(encode(image, name))
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB" if images.shape[1] == 3 else "L")) for f in files]
    decode_s = time.perf_counter() - started
    exact = all(np.array_equal(a.reshape(image.shape[1], image.shape[2], -1), image.transpose(1, 2, 0))
                for a, image in zip(decoded, images, strict=True))
    buffer = io.BytesIO()
    to_pil(mosaic(images)).save(buffer, **options)
    n = len(images)
    row = {"codec": name, "per_image_bpd": 8 * sum(map(len, files)) / (n * d),
           "one_file_bpd": 8 * len(buffer.getvalue()) / (n * d), "encode_images_per_s": n / encode_s,
           "decode_images_per_s": n / decode_s, "bit_exact": exact}
    print(f"{name:>14} {row['per_image_bpd']:>9.4f} {row['one_file_bpd']:>9.4f} {row['encode_images_per_s']:>10.0f}"
          f" {row['decode_images_per_s']:>10.0f}  {exact}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", default=[], help="ARDM checkpoint (repeatable)")
    parser.add_argument("--data", default="photos:8")
    parser.add_argument("--images", type=int, default=64, help="test images to compress")
    parser.add_argument("--budgets", default="4,20,50,100,192", help="total network calls per image, comma-separated")
    parser.add_argument("--table-images", type=int, default=256)
    parser.add_argument("--samples-per-step", type=int, default=4)
    parser.add_argument("--orders", type=int, default=5)
    parser.add_argument("--order-images", type=int, default=64)
    parser.add_argument("--order-budget", type=int, default=20, help="budget whose policy scores the orders")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=300, help="steps of the fallback model")
    parser.add_argument("--out", type=Path, default=Path("bench/results/compression.json"))
    args = parser.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",") if b]

    train_set, test_set = load_dataset(args.data, "train"), load_dataset(args.data, "test")
    images = np.ascontiguousarray(test_set.images[: args.images])
    if args.checkpoint:
        models = [(load_model(c).eval(), c) for c in args.checkpoint]
    else:
        print(f"no --checkpoint: training a cpu-tiny OA-ARDM for {args.train_steps} steps", flush=True)
        models = [(trained_model(train_set.images, train_set.num_classes, args.train_steps), "cpu-tiny (trained here)")]
    print(f"{args.data} test: {len(images)} images of {images.shape[1:]}, {torch.get_num_threads()} torch threads")
    print(f"{'model':>22} {'budget':>6} {'payload':>8} {'NLL':>8} {'file':>8} {'enc img/s':>9} {'dec img/s':>9}  exact")
    results = []
    for model, source in models:
        name = f"{model.upscaler} {model.spec.network['channels']}ch"
        results.append({"checkpoint": source, **bench_model(model, name, train_set.images, images, args)})
    print(f"\n{'codec':>14} {'per image':>9} {'one file':>9} {'enc img/s':>10} {'dec img/s':>10}  exact")
    baselines = [bench_codec(name, options, images) for name, options in CODECS.items()]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "data": args.data, "split": "test", "images": len(images), "dims_per_image": int(images[0].size),
        "models": results, "baselines": baselines,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    if not all(r["bit_exact"] for m in results for r in m["rows"]) or not all(b["bit_exact"] for b in baselines):
        raise SystemExit("a round trip was not bit-exact")


if __name__ == "__main__":
    main()
