"""Parquet shards of an ImageDataset, readable by path from any worker (local disk, NFS, file://, s3://, gs://).

Layout of a shard folder:
  <split>-<i:05d>.parquet  columns `image` (binary: the C*H*W uint8 values of one example in CHW order; a text
                           sequence's L character codes) and `index` (int32: the row's position in its split)
  manifest.json            {"format": "ardm-parquet", "version": 1, "name", "num_classes", "shape": [C, H, W],
                            "modality": "image" or "text" (absent: image),
                            "splits": {"train": [{"path", "rows", "sha256"}, ...], "test": [...]}}
Shard paths in the manifest are relative to its folder, so the folder can be copied or synced anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ardm.data.dataset import SPLITS, DataError, ImageDataset, check_split
from ardm.modality import IMAGE
from ardm.storage import filesystem, is_uri, write_atomic

FORMAT = "ardm-parquet"
VERSION = 1
MANIFEST = "manifest.json"


def _shard_bytes(images: np.ndarray, start: int) -> pa.Buffer:
    """A parquet file holding `images` (n, C, H, W) as rows `start`..`start + n - 1`."""
    n, row = len(images), int(np.prod(images.shape[1:]))
    # The binary column is built straight from the pixel buffer: fixed-size rows, offsets 0, row, 2*row...
    offsets = pa.py_buffer(np.arange(0, (n + 1) * row, row, dtype=np.int32))
    values = pa.py_buffer(np.ascontiguousarray(images).reshape(-1))
    image = pa.Array.from_buffers(pa.binary(), n, [None, offsets, values])
    index = pa.array(np.arange(start, start + n, dtype=np.int32))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"image": image, "index": index}), sink)
    return sink.getvalue()


def write_parquet_shards(
    dataset_train: ImageDataset,
    dataset_test: ImageDataset,
    out_dir: str | os.PathLike[str],
    rows_per_shard: int = 10000,
    source: str = "",
) -> str:
    """Write both splits as parquet shards of at most `rows_per_shard` rows plus manifest.json.

    source: the dataset spec they came from, kept in the manifest so a converted copy can be reused.

    out_dir: local path or URI (file://, s3://, gs://). Every file is written atomically and the manifest
    last, so a reader that finds a manifest finds complete shards. Returns the manifest's path or URI.
    """
    if (dataset_train.shape, dataset_train.num_classes, dataset_train.modality) != (
            dataset_test.shape, dataset_test.num_classes, dataset_test.modality):
        raise DataError(
            f"{dataset_train.name}: train {dataset_train.shape} K={dataset_train.num_classes} "
            f"{dataset_train.modality} and test {dataset_test.shape} K={dataset_test.num_classes} "
            f"{dataset_test.modality} differ"
        )
    out_dir = os.fspath(out_dir)
    if rows_per_shard < 1:
        raise DataError(f"{out_dir}: rows_per_shard must be >= 1, got {rows_per_shard}")
    if rows_per_shard * dataset_train.num_variables >= 2**31:  # int32 offsets of the binary column
        raise DataError(f"{out_dir}: {rows_per_shard} images per shard exceed 2 GiB; lower rows_per_shard")
    fs, root = filesystem(out_dir, DataError)
    fs.create_dir(root, recursive=True)
    splits: dict[str, list[dict]] = {}
    for split, dataset in (("train", dataset_train), ("test", dataset_test)):
        splits[split] = []
        for i, start in enumerate(range(0, len(dataset.images), rows_per_shard)):
            rows = dataset.images[start : start + rows_per_shard]
            payload = _shard_bytes(rows, start)
            name = f"{split}-{i:05d}.parquet"
            write_atomic(fs, posixpath.join(root, name), payload)
            digest = hashlib.sha256(payload).hexdigest()
            splits[split].append({"path": name, "rows": len(rows), "sha256": digest})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "name": dataset_train.name,
        "source": source,
        "num_classes": dataset_train.num_classes,
        "shape": list(dataset_train.shape),
        "modality": dataset_train.modality,
        "splits": splits,
    }
    write_atomic(fs, posixpath.join(root, MANIFEST), json.dumps(manifest, indent=1).encode())
    if is_uri(out_dir):
        return posixpath.join(out_dir.rstrip("/"), MANIFEST)
    return os.path.join(out_dir, MANIFEST)


def _manifest_location(uri: str) -> tuple[str, pafs.FileSystem, str]:
    """(folder URI as given, filesystem, folder path) for a shard folder or its manifest.json."""
    folder = uri.rstrip("/")
    if folder.endswith(".json"):
        folder = folder.rsplit("/", 1)[0] if "/" in folder else "."
    fs, root = filesystem(folder, DataError)
    return folder, fs, root


def read_manifest(uri: str | os.PathLike[str]) -> dict:
    """The manifest of a shard folder (`uri`: the folder or its manifest.json, a path or a URI)."""
    folder, fs, root = _manifest_location(os.fspath(uri))
    where = f"{folder}/{MANIFEST}"
    try:
        with fs.open_input_stream(posixpath.join(root, MANIFEST)) as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError as exc:
        raise DataError(f"{where}: no manifest (write the folder with write_parquet_shards)") from exc
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{where}: unreadable manifest ({exc})") from exc
    header = (manifest.get("format"), manifest.get("version")) if isinstance(manifest, dict) else None
    if header != (FORMAT, VERSION):
        raise DataError(f"{where}: not an {FORMAT} version {VERSION} manifest")
    missing = [key for key in ("name", "num_classes", "shape", "splits") if key not in manifest]
    if missing or any(split not in manifest["splits"] for split in SPLITS):
        raise DataError(f"{where}: manifest lacks {', '.join(missing) or 'a train or test split'}")
    return manifest


def split_record(uri: str | os.PathLike[str], split: str) -> dict:
    """What a tracker records of one split of a shard folder: {"name": the dataset spec it came
    from, "digest": 16 hex digits of the sha256 over its shards' sha256s (content, not paths),
    "source": the folder, "rows", "shape": [C, H, W], "num_classes", "modality"}."""
    check_split(split, os.fspath(uri))
    manifest = read_manifest(uri)
    shards = manifest["splits"][split]
    digest = hashlib.sha256("".join(entry["sha256"] for entry in shards).encode()).hexdigest()[:16]
    return {"name": manifest.get("source") or manifest["name"], "digest": digest,
            "source": _manifest_location(os.fspath(uri))[0], "rows": sum(entry["rows"] for entry in shards),
            "shape": manifest["shape"], "num_classes": manifest["num_classes"],
            "modality": manifest.get("modality", IMAGE)}


def _read_shard(
    fs: pafs.FileSystem, path: str, where: str, entry: dict, row: int, verify: bool
) -> np.ndarray:
    """The images (rows, row) uint8 of one shard; `where` names it in errors."""
    try:
        with fs.open_input_stream(path) as handle:
            payload = handle.read()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{where}: cannot read shard ({exc})") from exc
    if verify:
        actual = hashlib.sha256(payload).hexdigest()
        if actual != entry["sha256"]:
            raise DataError(f"{where}: sha256 mismatch (expected {entry['sha256']}, got {actual})")
    try:
        column = pq.read_table(pa.BufferReader(payload), columns=["image"]).column("image").combine_chunks()
    except (OSError, KeyError, pa.ArrowException) as exc:
        raise DataError(f"{where}: not a readable shard ({exc})") from exc
    if column.type != pa.binary() or column.null_count or len(column) != entry["rows"]:
        raise DataError(
            f"{where}: expected {entry['rows']} non-null binary images, got {len(column)} {column.type}"
        )
    # Fixed-size rows let the whole column be viewed as one array instead of copying row by row.
    offsets = np.frombuffer(column.buffers()[1], np.int32)[column.offset : column.offset + len(column) + 1]
    if np.any(np.diff(offsets) != row):
        raise DataError(f"{where}: images are not all {row} bytes long")
    values = np.frombuffer(column.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    return values.reshape(len(column), row)


def load_parquet_split(
    uri: str | os.PathLike[str], split: str, rank: int = 0, world_size: int = 1, verify: bool = True
) -> ImageDataset:
    """This worker's part of a split of a shard folder: uint8 (N, C, H, W), of the manifest's modality.

    uri: the folder or its manifest.json (local path, NFS path, file://, s3://, gs://).
    rank, world_size: with at least world_size shards, shard i goes to rank i % world_size (ranks can get
      a few rows more or fewer); with fewer shards every rank reads all of them and keeps rows j with
      j % world_size == rank, so no rank is left without data. Each row lands on exactly one rank.
    verify: check each shard read against the manifest's sha256.
    """
    uri = os.fspath(uri)
    check_split(split, uri)
    if not 0 <= rank < world_size:
        raise DataError(f"{uri}: need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    manifest = read_manifest(uri)
    folder, fs, root = _manifest_location(uri)
    shape = tuple(manifest["shape"])
    row = int(np.prod(shape))
    shards = manifest["splits"][split]
    strided = len(shards) < world_size
    mine = shards if strided else shards[rank::world_size]
    parts = [
        _read_shard(fs, posixpath.join(root, entry["path"]), f"{folder}/{entry['path']}", entry, row, verify)
        for entry in mine
    ]
    images = np.concatenate(parts) if parts else np.empty((0, row), np.uint8)
    if strided:
        images = np.ascontiguousarray(images[rank::world_size])
    if len(images) == 0:
        raise DataError(f"{uri}: split {split!r} has no rows for rank {rank} of {world_size}")
    return ImageDataset(images.reshape(-1, *shape), manifest["num_classes"], manifest["name"],
                        manifest.get("modality", IMAGE))
