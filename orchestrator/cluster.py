"""Joining the Ray cluster: the one at RAY_ADDRESS (a real cluster, `ray submit`), or a local one."""

from __future__ import annotations

import os

import ray


def connect_ray() -> None:
    """Join the Ray cluster at RAY_ADDRESS, or start a private local instance (unless already joined)."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local instance
        # address="local": a new instance even when another Ray runs on this machine (plain
        # ray.init() would join that one). One logical CPU more than the machine has: the trial
        # drivers' token shares must not keep the last worker of a full machine from being placed.
        ray.init(address="local", num_cpus=(os.cpu_count() or 1) + 1)
