"""Joining the Ray cluster: the one at RAY_ADDRESS (a real cluster, `ray submit`), or a local one."""

from __future__ import annotations

import os

import ray


def connect_ray(verbose: bool = False) -> None:
    """Join the Ray cluster at RAY_ADDRESS, or start a private local instance (unless already joined).

    Without `verbose` the console shows the driver's own output (Tune's trial table, the summary)
    and not the workers' and actors' lines (each Ray Train report, Ray's internal warnings), which
    stay in Ray's logs (/tmp/ray/session_latest/logs); MLflow's per-download progress bars are off.
    """
    if ray.is_initialized():
        return
    if not verbose:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=verbose)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance
        # address="local": a new instance even when another Ray runs on this machine (plain
        # ray.init() would join that one). One logical CPU more than the machine has: the trial
        # drivers' token shares must not keep the last worker of a full machine from being placed.
        ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1, log_to_driver=verbose)
