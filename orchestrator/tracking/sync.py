"""`ardm sync [--outbox DIR ...] [--tracking-uri URI]`: deliver tracking calls kept during an MLflow outage.

A sweep's tracker keeps the calls it could not make (metrics, tags, end of run, artifacts) in an outbox
folder (orchestrator/tracking/outbox.py; a sweep's is placed by orchestrator/layout.py) and delivers
them itself once the server answers again. What is left when the sweep's processes have ended,
because the server did not come back in time, is delivered here, run by run and in order, and removed
from the outbox. Each outbox file names the tracking URI its calls were meant for; `--tracking-uri`
sends them elsewhere instead (the same server under another address, e.g. through `ray attach
cluster.yaml -p 5000`). A URI recorded without its password (outbox files never hold one) is
completed from MLFLOW_TRACKING_URI when that names the same server, else it needs `--tracking-uri`.

Outboxes live on the machine that kept the calls: with storage on local disks of several nodes, run
`ardm sync` on each node.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import mlflow

from orchestrator.layout import DEFAULT_OUTBOXES, DEFAULT_STORAGE, OUTBOX_FOLDER, default_outboxes
from orchestrator.tracking.errors import TrackingError
from orchestrator.tracking.outbox import Outbox
from orchestrator.tracking.uris import REDACTED, check_tracking, redact


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `ardm sync [--outbox DIR ...] [--tracking-uri URI]`."""
    parser.add_argument(
        "--outbox",
        action="append",
        metavar="DIR",
        help=f"an outbox folder (repeatable); default: every {DEFAULT_OUTBOXES}",
    )
    parser.add_argument(
        "--tracking-uri", metavar="URI", help="deliver to this MLflow server instead of the URI each outbox file names"
    )


def sync_outbox(outbox: Outbox, tracking_uri: str | None = None) -> int:
    """Deliver every run's calls in `outbox`, printing one line per run; the number of runs left undelivered."""
    left = 0
    clients: dict[str, mlflow.MlflowClient] = {}
    for run_id in outbox.runs():
        uri = tracking_uri or outbox.tracking_uri(run_id)
        if tracking_uri is None and uri is not None and REDACTED in uri:  # recorded without its password
            from_env = os.environ.get("MLFLOW_TRACKING_URI")
            if from_env is None or redact(from_env) != uri:
                print(f"ardm: {outbox.folder}: run {run_id}: {uri} is recorded without its password; pass "
                      "--tracking-uri or set MLFLOW_TRACKING_URI", file=sys.stderr)
                left += 1
                continue
            uri = from_env
        if uri is None:
            print(
                f"ardm: {outbox.folder}: run {run_id}: no tracking URI recorded, pass --tracking-uri", file=sys.stderr
            )
            left += 1
            continue
        try:
            if uri not in clients:
                check_tracking(uri)  # an unreachable server fails in seconds, not after MLflow's retries
                clients[uri] = mlflow.MlflowClient(tracking_uri=uri)
            print(outbox.deliver(clients[uri], run_id, fail_fast=False))
        except TrackingError as err:
            print(f"ardm: {err}; run {run_id} stays in {outbox.folder}", file=sys.stderr)
            left += 1
    return left


def run_sync(args: argparse.Namespace) -> int:
    """`ardm sync`: 0 when everything was delivered (or nothing was waiting), 1 if some runs are left in
    their outbox (server unreachable, run unknown), 2 on bad input."""
    folders = [Path(folder) for folder in args.outbox] if args.outbox else default_outboxes()
    missing = [folder for folder in folders if not folder.is_dir()]
    if missing:
        print(f"ardm: error: {missing[0]}: no such outbox folder", file=sys.stderr)
        return 2
    if not folders:
        print(f"ardm: nothing to deliver: no {OUTBOX_FOLDER} folder under {DEFAULT_STORAGE}/ (see --outbox)")
        return 0
    left = 0
    for folder in folders:
        outbox = Outbox(folder)
        if not outbox.runs():
            print(f"{folder}: nothing to deliver")
            continue
        left += sync_outbox(outbox, args.tracking_uri)
    if left:
        print(
            f"ardm: {left} run(s) not delivered; their calls stay in the outbox for the next `ardm sync`",
            file=sys.stderr,
        )
        return 1
    return 0
