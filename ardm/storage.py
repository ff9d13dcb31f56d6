"""Paths that may be local (disk, NFS) or remote (file://, s3://, gs://), through pyarrow's filesystems,
and atomic writes on them: readers never see a half-written file."""

from __future__ import annotations

import json
import os
import posixpath
import uuid

import pyarrow as pa
import pyarrow.fs as pafs


def is_uri(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a URI (s3://, gs://, file://, ...), read and written through pyarrow's
    filesystems, rather than a plain local path (a disk or an NFS mount)."""
    return "://" in os.fspath(path)


def filesystem(uri: str, error: type[Exception] = OSError) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path in it) for a local path or a URI; `error` is raised, naming the URI, on failure."""
    if not is_uri(uri):
        # from_uri rejects relative paths; plain paths (local disk, NFS mounts) need no URI parsing.
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise error(f"{uri}: cannot open filesystem ({exc})") from exc


def write_atomic(fs: pafs.FileSystem, path: str, payload: bytes | pa.Buffer) -> None:
    """Write `payload` to a temporary name in the same folder, then rename it to `path`."""
    folder, base = posixpath.split(path)
    fs.create_dir(folder, recursive=True)
    temporary = posixpath.join(folder, f".{base}.{uuid.uuid4().hex}.tmp")
    with fs.open_output_stream(temporary) as out:
        out.write(payload)
    fs.move(temporary, path)


def is_file(uri: str) -> bool:
    """Whether a file is at a local path or URI."""
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_file(uri: str, error: type[Exception] = OSError) -> bytes | None:
    """The bytes of the file at a local path or URI, or None where there is no such file; `error`
    is raised, naming the URI, when its filesystem cannot be opened."""
    fs, path = filesystem(uri, error)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    return fs.open_input_file(path).read()


def read_json(uri: str) -> dict | None:
    """The JSON object in a file at a local path or URI, or None where there is no such file."""
    payload = read_file(uri)
    return None if payload is None else json.loads(payload)
