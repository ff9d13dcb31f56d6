"""Paths that may be local (disk, NFS) or remote (file://, s3://, gs://), through pyarrow's filesystems,
and atomic writes on them: readers never see a half-written file, and a write that runs out of space
ends with one line naming the file and the free space."""

from __future__ import annotations

import errno
import json
import math
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

# A write that found no room: a full disk, a full quota, or a file-size limit (RLIMIT_FSIZE, with
# SIGXFSZ ignored). Each needs space made before a rerun; no other error does.
OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class OutOfSpaceError(OSError):
    """A write that ran out of space; the message is one line naming the file and the free space."""


@contextmanager
def space_for(path: str | os.PathLike, local: bool = True) -> Iterator[None]:
    """Run a write of `path` (local: a path on this machine's disks or mounts, else one on object
    storage); an out-of-space error raised inside, or one that caused it (torch.save reports its
    file's OSError as a RuntimeError), becomes OutOfSpaceError naming `path`, why, and the free space."""
    try:
        yield
    except Exception as err:
        found = _out_of_space(err)
        if found is None:
            raise
        where = free_space(path) if local else "object storage does not report its free space"
        raise OutOfSpaceError(f"{path}: out of space ({os.strerror(found.errno)}; {where})") from err


def free_space(path: str | os.PathLike) -> str:
    """"N.N GiB free in FOLDER": the free space of a local path's filesystem, from its nearest existing folder."""
    folder = Path(path).absolute()
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    exponent = min(int(math.log(free, 1024)), 4) if free else 0
    size = f"{free} B" if exponent == 0 else f"{free / 1024**exponent:.1f} {'KMGT'[exponent - 1]}iB"
    return f"{size} free in {folder}"


def _out_of_space(err: BaseException) -> OSError | None:
    """The out-of-space OSError among `err` and the exceptions that led to it, if any."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in OUT_OF_SPACE:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


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
    """Write `payload` to a temporary name in the same folder, then rename it to `path`. Out of space,
    it raises OutOfSpaceError naming `path` and leaves the previous file, and no temporary."""
    folder, base = posixpath.split(path)
    temporary = posixpath.join(folder, f".{base}.{uuid.uuid4().hex}.tmp")
    with space_for(path, local=isinstance(fs, pafs.LocalFileSystem)):
        fs.create_dir(folder, recursive=True)
        try:
            with fs.open_output_stream(temporary) as out:
                out.write(payload)
            fs.move(temporary, path)
        except BaseException:
            with suppress(OSError):  # a partial temporary holds the space it took; its removal must not hide why
                fs.delete_file(temporary)
            raise


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
