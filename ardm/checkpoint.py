"""Checkpoint files: written atomically, read back with clear errors, rebuilt into models."""

from __future__ import annotations

import io
import os
import pickle
import uuid
from pathlib import Path

import torch

from ardm.data import ImageDataset, load_dataset
from ardm.data.spec import KIND_OPTIONS, parse_spec
from ardm.modality import examples_name
from ardm.model import ARDM, ModelSpec, build_ardm
from ardm.storage import is_uri, read_file, space_for

FORMAT = "ardm-checkpoint"
VERSION = 1
CHECKPOINT_FILE = "checkpoint.pt"  # in a run's output folder and in each Ray Train checkpoint folder
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or not for the model at hand (one-line message)."""


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """torch.save `payload` (plus format tags) to a temporary file beside `path`, then rename.

    A crash mid-write leaves the previous file intact: readers never see a truncated checkpoint. Out of
    space, it raises OutOfSpaceError naming `path` and the free space, and removes the temporary file.
    """
    path = Path(path)
    # A unique dot-name opened exclusively ("x"), not tempfile.mkstemp: mkstemp's files are private
    # (mode 0600) and the rename would keep that, hiding checkpoints on shared storage from other users.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    with space_for(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tmp.open("xb") as f:
                torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def trained_data(checkpoint: dict) -> str | None:
    """The dataset spec a checkpoint (as load_checkpoint returns it) was trained on: a sweep trial's
    Parquet shards, else the spec of `ardm train`'s config; None if it does not say."""
    extra = checkpoint.get("extra", {})
    return f"parquet:{extra['data_uri']}" if extra.get("data_uri") else extra.get("data")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` from a local path or a URI (s3://, ...);
    CheckpointError names the file and problem."""
    source: Path | io.BytesIO
    if is_uri(path):  # sweep storage on an object store
        payload = read_file(str(path), CheckpointError)
        if payload is None:
            raise CheckpointError(f"{path}: checkpoint file not found")
        source = io.BytesIO(payload)
        head = payload[: len(ZIP_MAGIC)]
    else:
        path = source = Path(path)
        if path.is_dir():
            inside = _checkpoint_in(path)
            found = f"pass the file {inside}" if inside else "it holds no checkpoint file"
            raise CheckpointError(f"{path}: is a folder, not a checkpoint file; {found}")
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint file not found")
        with path.open("rb") as handle:
            head = handle.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:  # a PNG, a YAML file, ...: say what it is not, before torch says more
        raise CheckpointError(f"{path}: not an ARDM checkpoint (not a file written by torch.save)")
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises weights_only=False, which would run whatever code the file holds.
        raise CheckpointError(f"{path}: not an ARDM checkpoint (it holds objects other than tensors)") from err
    except Exception as err:  # torch raises several types for truncated or corrupt files
        reason = f"{type(err).__name__}: {err}".splitlines()[0].split(". ")[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ARDM checkpoint (format tag missing)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')}, this code reads {VERSION}")
    return payload


def _checkpoint_in(folder: Path) -> Path | None:
    """The checkpoint file a folder passed as a checkpoint most likely meant: its checkpoint.pt (an
    `ardm train` output folder), else that of its newest Ray Train checkpoint_<timestamp>/ folder."""
    newest_first = sorted(folder.glob(f"checkpoint_*/{CHECKPOINT_FILE}"), reverse=True)
    return next((p for p in [folder / CHECKPOINT_FILE, *newest_first] if p.is_file()), None)


def check_same_model(payload: dict, spec: ModelSpec, path: str | Path) -> None:
    """Refuse a checkpoint whose model spec differs from `spec`, naming the first differing field."""
    saved = payload["model_spec"]
    for key, value in spec.to_dict().items():
        if _plain(saved.get(key)) != _plain(value):
            raise CheckpointError(f"{path}: checkpoint is for another model ({key}: {saved.get(key)!r} != {value!r})")


def check_data_fits(spec: ModelSpec, shape: tuple[int, ...], num_classes: int, data: str) -> None:
    """Refuse data whose example shape (C, H, W; 1 x 1 x L for text) or number of classes K differs
    from the model's; the message names the examples as the model's modality does (images, sequences)."""
    if tuple(shape) != tuple(spec.shape) or num_classes != spec.num_classes:
        hint = ""
        if num_classes != spec.num_classes and "k" in KIND_OPTIONS[parse_spec(data).kind]:
            hint = f"; if the data has K={spec.num_classes} classes, say so in its spec with ?k={spec.num_classes}"
        raise CheckpointError(
            f"{data}: {examples_name(spec.modality)} are {'x'.join(map(str, shape))} with K={num_classes}, the "
            f"checkpoint's model is for "
            f"{'x'.join(map(str, spec.shape))} with K={spec.num_classes}{hint}"
        )


def load_fitting_data(spec: ModelSpec, data: str, split: str) -> ImageDataset:
    """Split `split` of dataset `data`, refused (CheckpointError) unless its images fit the model (check_data_fits)."""
    dataset = load_dataset(data, split)
    check_data_fits(spec, dataset.shape, dataset.num_classes, data)
    return dataset


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def load_model(path: str | Path, ema: bool = True, map_location: str | torch.device = "cpu") -> ARDM:
    """Rebuild the ARDM saved in a checkpoint, with its EMA weights (default) or raw weights."""
    payload = load_checkpoint(path, map_location)
    model = build_ardm(ModelSpec.from_dict(payload["model_spec"]))
    if ema:
        # AveragedModel keys are "module.<name>" plus its "n_averaged" counter.
        weights = {k.removeprefix("module."): v for k, v in payload["ema"].items() if k.startswith("module.")}
    else:
        weights = payload["model"]
    model.load_state_dict(weights)
    return model.to(map_location)
