"""MLflow tracking of sweeps: the tracker, its outbox for outages, and `ardm sync`.

    uris.py     which tracking URI a command uses, whether it works, how it is shown (redacted)
    tracker.py  SweepTracker: a sweep's parent run and its trials' nested runs, from any process
    outbox.py   the calls a tracker could not make during an outage, kept on disk until delivered
    sync.py     `ardm sync`: deliver what is left in outboxes
    errors.py   TrackingError and TrackingUnreachable

The names of tags, metrics and artifacts are in orchestrator/names.py.
"""

from orchestrator.tracking.errors import TrackingError, TrackingUnreachable
from orchestrator.tracking.outbox import Outbox
from orchestrator.tracking.tracker import SweepTracker, flatten, system_metrics
from orchestrator.tracking.uris import (
    REDACTED,
    check_tracking,
    default_tracking_uri,
    existing_store,
    redact,
    resolve_tracking_uri,
    sqlite_path,
)

__all__ = [
    "REDACTED",
    "Outbox",
    "SweepTracker",
    "TrackingError",
    "TrackingUnreachable",
    "check_tracking",
    "default_tracking_uri",
    "existing_store",
    "flatten",
    "redact",
    "resolve_tracking_uri",
    "sqlite_path",
    "system_metrics",
]
