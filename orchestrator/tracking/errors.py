"""Errors of the tracking layer: the tracker, its outbox, `ardm sync` and the tracking URI checks."""

from __future__ import annotations


class TrackingError(RuntimeError):
    """A tracking problem, as one line naming the tracking URI and what is wrong."""


class TrackingUnreachable(TrackingError):
    """The tracking server (or database) did not answer: an outage, as opposed to a refused call."""
