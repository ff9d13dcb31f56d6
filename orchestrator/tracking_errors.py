"""Errors of the tracking layer, shared by the tracker (orchestrator/tracking.py) and its outbox
(orchestrator/outbox.py), and the one-line formatting their messages use."""

from __future__ import annotations

import re
from typing import Any

TRUNCATED = "...[truncated]"  # marks a value cut to fit a limit
REDACTED = "***"  # stands for a password or token taken out of a URI

# scheme://user:PASSWORD@host, and query values whose names say they are secret (?password=..., &sig=...)
_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^/?#@\s]*@")
_SECRET_NAME = r"[^=&#\s]*(?:pass|secret|token|key|sig|credential|auth)[^=&#\s]*"
_SECRET_QUERY = re.compile(rf"(?i)(?P<head>[?&]{_SECRET_NAME}=)[^&#\s]*")


class TrackingError(RuntimeError):
    """A tracking problem, as one line naming the tracking URI and what is wrong."""


class TrackingUnreachable(TrackingError):
    """The tracking server (or database) did not answer: an outage, as opposed to a refused call."""


def redact(text: str) -> str:
    """`text` with the passwords of the URIs in it (scheme://user:PASSWORD@host) and the values of their
    secret-looking query parameters (password, token, key, sig, ...) replaced by ***.

    Tracking URIs often carry credentials (a database backend's password, a server's basic auth), and
    MLFLOW_TRACKING_URI brings them in from the environment: whatever is written (tags, params, state
    files, the report, the outbox) or printed names a URI through this. A token given as the user part
    alone (https://TOKEN@host) is not recognised."""
    return _SECRET_QUERY.sub(rf"\g<head>{REDACTED}", _PASSWORD.sub(rf"\g<head>{REDACTED}@", text))


def one_line(value: Any, limit: int) -> str:
    """`value` as one line of at most `limit` characters, for error messages and tags."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED
