"""Errors of the tracking layer, shared by the tracker (orchestrator/tracking.py) and its outbox
(orchestrator/outbox.py), and the one-line formatting their messages use."""

from __future__ import annotations

from typing import Any

TRUNCATED = "...[truncated]"  # marks a value cut to fit a limit


class TrackingError(RuntimeError):
    """A tracking problem, as one line naming the tracking URI and what is wrong."""


class TrackingUnreachable(TrackingError):
    """The tracking server (or database) did not answer: an outage, as opposed to a refused call."""


def one_line(value: Any, limit: int) -> str:
    """`value` as one line of at most `limit` characters, for error messages and tags."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED
