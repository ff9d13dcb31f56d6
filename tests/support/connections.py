"""Counting the TCP connections that requests (and so MLflow's client) opens to one port.

A call that must fail fast is checked by its mechanism, not by a stopwatch (which a loaded 2-core
CI machine can blow): how many connection attempts it makes and the timeouts each one was given.
The timings themselves are in bench/tracking_check.py.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import pytest
import urllib3.util.connection


@dataclass
class Attempt:
    """One attempt to connect: its connect timeout, and the socket if it connected (None if refused).
    The socket keeps the timeout its last read waited with, even once closed (`gettimeout()`)."""

    timeout: float | None
    socket: socket.socket | None = None


def connection_attempts(monkeypatch: pytest.MonkeyPatch, port: int) -> list[Attempt]:
    """From now on (until the test ends), every attempt to connect to `port` through urllib3 (which
    requests and MLflow use), in order."""
    attempts: list[Attempt] = []
    connect = urllib3.util.connection.create_connection

    def counting(address, timeout, *args, **kwargs):  # urllib3 passes the timeout by position
        if address[1] != port:
            return connect(address, timeout, *args, **kwargs)
        attempts.append(Attempt(timeout))
        attempts[-1].socket = connect(address, timeout, *args, **kwargs)
        return attempts[-1].socket

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    return attempts
