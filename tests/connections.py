"""Counting the TCP connections that requests (and so MLflow's client) opens to one port.

A call that must fail fast is checked by its mechanism, not by a stopwatch (which a loaded 2-core
CI machine can blow): how many connection attempts it makes and the timeout each one was given.
The timings themselves are in bench/tracking_check.py.
"""

from __future__ import annotations

import pytest
import urllib3.util.connection


def connection_attempts(monkeypatch: pytest.MonkeyPatch, port: int) -> list[float | None]:
    """From now on (until the test ends), the connect timeout of every attempt to connect to `port`,
    in order, through urllib3 (which requests and MLflow use)."""
    attempts: list[float | None] = []
    connect = urllib3.util.connection.create_connection

    def counting(address, timeout, *args, **kwargs):  # urllib3 passes the timeout by position
        if address[1] == port:
            attempts.append(timeout)
        return connect(address, timeout, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    return attempts
