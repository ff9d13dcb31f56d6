"""Downloads of official dataset archives into a cache folder, md5-checked and renamed into place atomically.

The cache folder is $ARDM_CACHE, else ~/.cache/ardm. A registered source (SOURCES) is fetched from, in order:
$ARDM_<NAME>_URL (e.g. ARDM_CIFAR10_URL, the full URL of the file), $ARDM_MIRROR/<file name> (a base URL
serving the archives under their official file names), or the official URL. The expected md5 is the official
archive's unless the caller passes another. A download goes to a hidden temporary file in the destination
folder, is hashed while it streams, and is renamed over the destination only once the md5 matches; any failure
(HTTP error, refused connection, short read, md5 mismatch, Ctrl-C) removes the temporary file and, but for
Ctrl-C, raises DataError in one line naming the URL and the reason.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ardm.data.cifar import ARCHIVE_NAME, CIFAR10_MD5
from ardm.data.dataset import DataError
from ardm.progress import progress as progress_bar

CACHE_ENV = "ARDM_CACHE"
MIRROR_ENV = "ARDM_MIRROR"
DEFAULT_CACHE = Path("~/.cache/ardm")
CHUNK = 1 << 20
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Source:
    """One official download: its URL, the md5 of the file it serves, and the file's name in the cache."""

    url: str
    md5: str
    name: str


# Datasets that can be downloaded, by spec kind. A new one is one line here (its reader does the rest).
SOURCES: dict[str, Source] = {
    "cifar10": Source(f"https://www.cs.toronto.edu/~kriz/{ARCHIVE_NAME}", CIFAR10_MD5, ARCHIVE_NAME),
    "text8": Source("http://mattmahoney.net/dc/text8.zip", "f26f94c5209bc6159618bad4a559ff81", "text8.zip"),
}


def cache_dir() -> Path:
    """The download cache folder: $ARDM_CACHE if set (and not empty), else ~/.cache/ardm (not created here)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def source_url(kind: str) -> str:
    """Where SOURCES[kind] is fetched from: $ARDM_<KIND>_URL, else $ARDM_MIRROR/<name>, else the official URL."""
    source = SOURCES[kind]
    override = os.environ.get(f"ARDM_{kind.upper()}_URL")
    if override:
        return override
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{source.name}"
    return source.url


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_source(kind: str, md5: str | None, path: str | Path | None = None, progress: bool = True) -> Path:
    """The local copy of the registered source `kind`, downloaded first if needed (see fetch).

    md5: the expected hash (usually SOURCES[kind].md5; None skips the check). path: the file to download to
    (default <cache folder>/<official file name>).
    """
    target = Path(path) if path is not None else cache_dir() / SOURCES[kind].name
    return fetch(source_url(kind), md5, target.name, target.parent, progress)


def fetch(
    url: str, md5: str | None, name: str, cache: str | Path | None = None, progress: bool = True
) -> Path:
    """<cache>/<name>, downloaded from `url` unless it is already there with the expected md5.

    cache: the destination folder (default cache_dir(); created if missing). md5: expected hex digest of the
    file, or None to accept any content (a present file is then used as it is). progress: a progress bar named
    after the file, on stderr (ardm.progress). Raises DataError "<url>: <reason>" (one line) on any failure,
    leaving neither a partial nor a temporary file behind; an existing file is only ever replaced by a complete,
    checked one.
    """
    folder = Path(cache).expanduser() if cache is not None else cache_dir()
    target = folder / name
    expected = md5.lower() if md5 else None
    if target.is_file() and (expected is None or file_md5(target) == expected):
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise DataError(f"{folder}: cannot write the download of {url} here ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(handle, "wb") as out:
            actual = _download(url, out, name, progress)
        if expected is not None and actual != expected:
            raise DataError(f"{url}: md5 mismatch (expected {expected}, got {actual}); download discarded")
        os.replace(temporary, target)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            raise DataError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from exc
        if isinstance(exc, urllib.error.URLError):
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            raise DataError(f"{url}: download failed ({reason})") from exc
        if isinstance(exc, OSError | http.client.HTTPException | ValueError) and not isinstance(exc, DataError):
            raise DataError(f"{url}: download failed ({type(exc).__name__}: {exc})") from exc
        raise  # DataError as it is; KeyboardInterrupt and the like after the cleanup
    return target


def _download(url: str, out, name: str, progress: bool) -> str:
    """Stream `url` into the open binary file `out` with a progress bar; returns the md5 of what was read."""
    digest = hashlib.md5()
    request = urllib.request.Request(url, headers={"User-Agent": "ardm"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with progress_bar(
            total=total, desc=f"download {name}", enabled=progress, unit="B", unit_scale=True, unit_divisor=1024
        ) as bar:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DataError(f"{url}: download failed (connection closed after {received} of {total} bytes)")
    return digest.hexdigest()
