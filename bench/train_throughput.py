"""Training throughput and peak memory of the network presets, side by side in one run.

Each configuration runs in its own subprocess (so peak RSS is its own): a few warm-up training
steps, then timed steps of the full objective (forward, backward, Adam, EMA), twice: once reading
the metrics every step (log_every=1: the host waits for the device every step) and once only at
the last step (how the loop runs between logs). Prints a table with images/second of the second
run, its ratio to the first row, and the ratio of the two runs ("vs sync"), and writes JSON. On a
CPU the ratio stays near 1 (every operation is synchronous anyway); on a GPU it is what the
per-step waits cost.

    python bench/train_throughput.py [--steps 10] [--device cuda] [--out bench/results/train_throughput.json]
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

from ardm.device import choose_device
from ardm.modality import IMAGE, TEXT
from ardm.model import ARDM, ModelSpec, build_ardm
from ardm.networks import get_preset
from ardm.train import TrainConfig, train

# (name, preset, example shape, K, branching, batch, modality): the small presets on photo patches,
# the text preset on sequences of 64 characters (configs/text.yaml, sweeps/text-demo.yaml), then
# one step of the paper's CIFAR-10 network at batch 8.
CASES = [
    ("cpu-tiny photos:8 OA", "cpu-tiny", (3, 8, 8), 256, 256, 64, IMAGE),
    ("cpu-small photos:8 OA", "cpu-small", (3, 8, 8), 256, 256, 64, IMAGE),
    ("cpu-small photos:8 b=4", "cpu-small", (3, 8, 8), 256, 4, 64, IMAGE),
    ("cpu-small photos:16 b=4", "cpu-small", (3, 16, 16), 256, 4, 32, IMAGE),
    ("cpu-text pydoc length 64 OA", "cpu-text", (1, 1, 64), 27, 27, 64, TEXT),
    ("cpu-text pydoc length 64 b=3", "cpu-text", (1, 1, 64), 27, 3, 64, TEXT),
    ("paper-cifar10 cifar b=4 (1 step)", "paper-cifar10", (3, 32, 32), 256, 4, 8, IMAGE),
]


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(model: ARDM, images: np.ndarray, steps: int, batch: int, log_every: int,
           device: str) -> float:
    """Seconds for `steps` training steps that read their metrics every `log_every` steps."""
    config = TrainConfig(steps=steps, batch_size=batch, checkpoint_every=10**9, log_every=log_every)
    start = time.perf_counter()
    train(model, images, config, device=device, progress=False)
    return time.perf_counter() - start  # train() has read the last step's metrics: the device is done


def _measure(case: tuple, steps: int, device: str, queue: mp.Queue) -> None:
    name, preset, shape, k, b, batch, modality = case
    torch.manual_seed(0)
    spec = ModelSpec(shape=shape, num_classes=k, branching=b, parameterization="data",
                     network=get_preset(preset).to_dict(), modality=modality)
    model = build_ardm(spec)
    images = np.random.default_rng(0).integers(0, k, (256, *shape), dtype=np.uint8)
    big = preset == "paper-cifar10" and device == "cpu"
    warmup, timed = (1, 1) if big else (3, steps)
    base_rss = _peak_rss_mib()
    _timed(model, images, warmup, batch, warmup, device)
    every_step = _timed(model, images, timed, batch, 1, device)
    at_log = _timed(model, images, timed, batch, timed, device)
    queue.put({
        "name": name, "preset": preset, "shape": list(shape), "K": k, "branching": b, "batch": batch,
        "device": device, "params": sum(p.numel() for p in model.parameters()), "timed_steps": timed,
        "seconds_per_step": at_log / timed, "images_per_sec": batch * timed / at_log,
        "seconds_per_step_sync_every_step": every_step / timed,
        "speedup_vs_sync_every_step": every_step / at_log,
        "peak_rss_mib": _peak_rss_mib(), "peak_rss_above_start_mib": _peak_rss_mib() - base_rss,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None,
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="bench/results/train_throughput.json")
    parser.add_argument("--skip-paper", action="store_true", help="leave out the paper-cifar10 step")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda where available)")
    args = parser.parse_args()
    device = choose_device(args.device)
    ctx = mp.get_context("spawn")
    rows = []
    for case in CASES:
        if args.skip_paper and case[1] == "paper-cifar10":
            continue
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(case, args.steps, device, queue))
        proc.start()
        rows.append(queue.get())
        proc.join()
    ref = rows[0]["images_per_sec"]
    memory = "peak_cuda_mib" if device.startswith("cuda") else "peak_rss_mib"
    print(f"device: {device}")
    header = ("configuration", "params", "batch", "s/step", "img/s", "vs first", "vs sync", "peak MiB")
    widths = (11, 5, 8, 9, 8, 8, 9)
    print(f"{header[0]:34} " + " ".join(f"{h:>{w}}" for h, w in zip(header[1:], widths, strict=True)))
    for r in rows:
        print(f"{r['name']:34} {r['params']:>11,} {r['batch']:>5} {r['seconds_per_step']:>8.3f} "
              f"{r['images_per_sec']:>9.1f} {r['images_per_sec'] / ref:>8.3f} "
              f"{r['speedup_vs_sync_every_step']:>8.3f} {r[memory]:>9.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": mp.cpu_count(), "device": device,
            "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
