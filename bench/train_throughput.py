"""Training throughput and peak memory of the network presets, side by side in one run.

Each configuration runs in its own subprocess (so peak RSS is its own): a few warm-up training
steps, then timed steps of the full objective (forward, backward, Adam, EMA). Prints a table
with images/second and the ratio to the first row, and writes JSON.

    python bench/train_throughput.py [--steps 10] [--out bench/results/train_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ardm.model import ModelSpec, build_ardm
from ardm.networks import get_preset
from ardm.train import TrainConfig, train

# (name, preset, image shape, K, branching, batch): the small presets on photo patches, then one
# step of the paper's CIFAR-10 network at batch 8.
CASES = [
    ("cpu-tiny photos:8 OA", "cpu-tiny", (3, 8, 8), 256, 256, 64),
    ("cpu-small photos:8 OA", "cpu-small", (3, 8, 8), 256, 256, 64),
    ("cpu-small photos:8 b=4", "cpu-small", (3, 8, 8), 256, 4, 64),
    ("cpu-small photos:16 b=4", "cpu-small", (3, 16, 16), 256, 4, 32),
    ("paper-cifar10 cifar b=4 (1 step)", "paper-cifar10", (3, 32, 32), 256, 4, 8),
]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _measure(case: tuple, steps: int, queue: mp.Queue) -> None:
    name, preset, shape, k, b, batch = case
    torch.manual_seed(0)
    spec = ModelSpec(shape=shape, num_classes=k, branching=b, parameterization="data",
                     network=get_preset(preset).to_dict())
    model = build_ardm(spec)
    images = np.random.default_rng(0).integers(0, k, (256, *shape), dtype=np.uint8)
    big = preset == "paper-cifar10"
    warmup, timed = (1, 1) if big else (3, steps)
    base_rss = _peak_rss_mib()
    train(model, images, TrainConfig(steps=warmup, batch_size=batch, checkpoint_every=10**9), progress=False)
    start = time.perf_counter()
    train(model, images, TrainConfig(steps=timed, batch_size=batch, checkpoint_every=10**9), progress=False)
    seconds = time.perf_counter() - start
    queue.put({
        "name": name, "preset": preset, "shape": list(shape), "K": k, "branching": b, "batch": batch,
        "params": sum(p.numel() for p in model.parameters()), "timed_steps": timed,
        "seconds_per_step": seconds / timed, "images_per_sec": batch * timed / seconds,
        "peak_rss_mib": _peak_rss_mib(), "peak_rss_above_start_mib": _peak_rss_mib() - base_rss,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="bench/results/train_throughput.json")
    parser.add_argument("--skip-paper", action="store_true", help="leave out the paper-cifar10 step")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for case in CASES:
        if args.skip_paper and case[1] == "paper-cifar10":
            continue
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(case, args.steps, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    ref = rows[0]["images_per_sec"]
    header = ("configuration", "params", "batch", "s/step", "img/s", "vs first", "peak MiB")
    print(f"{header[0]:34} " + " ".join(f"{h:>{w}}" for h, w in zip(header[1:], (11, 5, 8, 9, 8, 9), strict=True)))
    for r in rows:
        print(f"{r['name']:34} {r['params']:>11,} {r['batch']:>5} {r['seconds_per_step']:>8.3f} "
              f"{r['images_per_sec']:>9.1f} {r['images_per_sec'] / ref:>8.3f} {r['peak_rss_mib']:>9.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": mp.cpu_count()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
