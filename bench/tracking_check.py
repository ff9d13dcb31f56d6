"""How fast tracking calls fail when the MLflow server is not there: the timings the tests no longer assert.

The tests check the mechanism (tests/orchestrator/test_tracking.py, tests/faults/test_tracking_outage.py:
one connection attempt per check, 1 + FAIL_FAST_RETRIES per call during an outage, each with its
timeout); this measures what that costs in seconds, against the limits the tests used to assert:

    closed port      check_tracking(timeout=2) on a port nothing listens on (limit 3 s)
    silent server    check_tracking(timeout=0.5) on a port that accepts connections, never answers (limit 1.5 s)
    outage call      a metric batch sent fail-fast to a closed port, as a tracker with an outbox does (limit 3 s)

    python bench/tracking_check.py [--repeats 5] [--out bench/results/tracking_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import mlflow

from orchestrator.tracking import TrackingError, TrackingUnreachable, check_tracking
from orchestrator.tracking.outbox import send


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def failing(call: Callable[[], None], error: type[Exception], repeats: int) -> list[float]:
    """Seconds each of `repeats` calls took to raise `error` (anything else is a bug: it propagates)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            call()
        except error:
            seconds.append(time.perf_counter() - start)
        else:
            raise RuntimeError("the call did not fail")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/tracking_check.json")
    args = parser.parse_args()

    closed = f"http://127.0.0.1:{closed_port()}"
    client = mlflow.MlflowClient(closed)
    batch = {"op": "metrics", "metrics": [["loss", 1.0, int(time.time() * 1000), 0]]}
    with socket.socket() as silent:  # listens (the kernel accepts connections) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        cases = {
            "closed port": (3.0, failing(lambda: check_tracking(closed, timeout=2.0), TrackingError, args.repeats)),
            "silent server": (1.5, failing(lambda: check_tracking(f"http://127.0.0.1:{silent.getsockname()[1]}",
                                                                  timeout=0.5), TrackingError, args.repeats)),
            "outage call": (3.0, failing(lambda: send(client, "0" * 32, batch, Path(), fail_fast=True),
                                         TrackingUnreachable, args.repeats)),
        }

    print(f"{'case':14} {'repeats':>8} {'median s':>9} {'max s':>7} {'limit s':>8}  within")
    rows = []
    for name, (limit, seconds) in cases.items():
        median, worst = statistics.median(seconds), max(seconds)
        within = "yes" if worst < limit else "NO"
        print(f"{name:14} {len(seconds):>8} {median:>9.3f} {worst:>7.3f} {limit:>8.1f}  {within}")
        rows.append({"case": name, "limit_s": limit, "seconds": seconds, "median_s": median, "max_s": worst})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "python": platform.python_version(),
                               "mlflow": mlflow.__version__, "cases": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
