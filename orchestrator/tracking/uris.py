"""Tracking URIs: which one a command uses, whether it works, and how it is shown.

Every command picks one with `resolve_tracking_uri`: `--tracking-uri` or the sweep's `tracking.uri`,
else `MLFLOW_TRACKING_URI` (cluster.yaml sets it on every node), else SQLite in the working directory
(`default_tracking_uri()`, `sqlite:///<cwd>/mlflow.db`). MLflow 3 refuses its old file store
(`./mlruns`, `file:...`). On a cluster run `mlflow server` and use its `http://host:port`, which also
proxies artifact uploads so workers need no shared filesystem. `check_tracking(uri)` validates a URI
before Ray or training starts, so a typo fails in a second with one line instead of after the first
trial has trained. Whatever is written or printed names a URI through `redact`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import requests
from mlflow.environment_variables import (
    MLFLOW_TRACKING_INSECURE_TLS,
    MLFLOW_TRACKING_SERVER_CERT_PATH,
    MLFLOW_TRACKING_URI,
)

from orchestrator.messages import one_line
from orchestrator.tracking.errors import TrackingError

REDACTED = "***"  # stands for a password or token taken out of a URI

# scheme://user:PASSWORD@host, and query values whose names say they are secret (?password=..., &sig=...)
_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)[^/?#@\s]*@")
_SECRET_NAME = r"[^=&#\s]*(?:pass|secret|token|key|sig|credential|auth)[^=&#\s]*"
_SECRET_QUERY = re.compile(rf"(?i)(?P<head>[?&]{_SECRET_NAME}=)[^&#\s]*")
_SQLITE = "sqlite:///"


def redact(text: str) -> str:
    """`text` with the passwords of the URIs in it (scheme://user:PASSWORD@host) and the values of their
    secret-looking query parameters (password, token, key, sig, ...) replaced by ***.

    Tracking URIs often carry credentials (a database backend's password, a server's basic auth), and
    MLFLOW_TRACKING_URI brings them in from the environment: whatever is written (tags, params, state
    files, the report, the outbox) or printed names a URI through this. A token given as the user part
    alone (https://TOKEN@host) is not recognised."""
    return _SECRET_QUERY.sub(rf"\g<head>{REDACTED}", _PASSWORD.sub(rf"\g<head>{REDACTED}@", text))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URI (sqlite:///relative.db, sqlite:////absolute.db; a
    ?query holds driver options, not the path); None for other URIs and for one without a path."""
    if uri[: len(_SQLITE)].lower() != _SQLITE:
        return None
    path = uri[len(_SQLITE) :].split("?", 1)[0]
    return Path(path) if path else None


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """The local default: a SQLite database `mlflow.db` in `cwd` (the current directory if None).

    The path is made absolute because Ray workers run with other working directories.
    """
    folder = Path(os.getcwd() if cwd is None else cwd).resolve()
    return f"{_SQLITE}{folder / 'mlflow.db'}"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI, in MLflow's usual order: `explicit` (--tracking-uri, or a sweep's tracking.uri),
    else the MLFLOW_TRACKING_URI environment variable, else the local default (`default_tracking_uri`)."""
    return explicit or MLFLOW_TRACKING_URI.get() or default_tracking_uri()


def existing_store(explicit: str | None = None) -> str:
    """The tracking URI in the usual order (`resolve_tracking_uri`), checked to name a store that
    already exists and answers: for commands that read runs, where a new empty store is a mistake."""
    uri = resolve_tracking_uri(explicit)
    if (db := sqlite_path(uri)) is not None and not db.is_file():
        raise TrackingError(f"{uri}: no MLflow store there (give --tracking-uri, or set MLFLOW_TRACKING_URI)")
    check_tracking(uri)
    return uri


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast with a TrackingError if `uri` cannot be used as an MLflow 3 tracking URI.

    http(s): the server must answer GET /health with 200 within `timeout` seconds. sqlite:///PATH:
    the database's folder must exist (it is created when only its last component is missing, so a
    fresh `runs/mlflow.db` works but a mistyped deep path does not) and be writable. A plain path or
    a file: URI is refused, since MLflow 3 refuses the file store. Other schemes (postgresql, mysql,
    databricks, ...) are passed through: their drivers and credentials are checked by MLflow itself.
    """
    try:
        _check_tracking(uri, timeout)
    except TrackingError as err:  # the URI in the message, without a password it may hold
        raise TrackingError(redact(str(err))) from None


def _check_tracking(uri: str, timeout: float) -> None:
    if not uri.strip():
        raise TrackingError(f"{uri!r}: empty tracking URI (use {default_tracking_uri()} or http://HOST:PORT)")
    scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", uri) else ""
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("", "file"):
        path = Path(re.sub(r"^file:(//)?", "", uri)).absolute()
        db = path if path.is_file() or path.suffix == ".db" else path / "mlflow.db"  # a database file, or a folder
        raise TrackingError(f"{uri}: MLflow 3 refuses the file store; use a database, e.g. sqlite:///{db}")


def _check_server(uri: str, timeout: float) -> None:
    """GET `<uri>/health` once, without MLflow's retries: an unreachable server must fail fast."""
    # Honour MLflow's own TLS settings so that this check agrees with what the client will do.
    verify: bool | str = MLFLOW_TRACKING_SERVER_CERT_PATH.get() or not MLFLOW_TRACKING_INSECURE_TLS.get()
    try:
        response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout, verify=verify)
    except requests.Timeout:
        raise TrackingError(f"{uri}: tracking server unreachable (no answer within {timeout:g} s)") from None
    except requests.RequestException as err:
        raise TrackingError(f"{uri}: tracking server unreachable ({one_line(err, 300)})") from None
    if response.status_code != 200:
        raise TrackingError(
            f"{uri}: tracking server unreachable (GET /health answered {response.status_code} "
            f"{one_line(response.text, 200)})"
        )


def _check_sqlite(uri: str) -> None:
    """The SQLite database's folder exists (or can be made) and the database can be written."""
    db = sqlite_path(uri)
    if db is None:
        raise TrackingError(f"{uri}: expected sqlite:///PATH (an in-memory database is not shared by processes)")
    folder = db.parent
    if not folder.exists() and folder.parent.is_dir():
        try:
            folder.mkdir()
        except OSError as err:
            raise TrackingError(f"{uri}: cannot create the database folder {folder} ({err.strerror})") from None
    if not folder.is_dir():
        raise TrackingError(f"{uri}: the database folder {folder} does not exist")
    if db.is_dir():
        raise TrackingError(f"{uri}: {db} is a directory, not a database file")
    if not os.access(folder, os.W_OK | os.X_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise TrackingError(f"{uri}: {db if db.exists() else folder} is not writable")
