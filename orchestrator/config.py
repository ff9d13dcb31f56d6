"""Sweep files: one YAML schema, validated into typed dataclasses before anything starts.

A sweep file has these sections (see sweeps/*.yaml for complete examples):

    sweep:       name, num_samples, max_concurrent_trials (0: derived from the cluster), seed
    data:        spec (a dataset spec, e.g. cifar10:/path or photos:8), rows_per_shard
    model:       preset, network (field overrides), branching, parameterization   (ardm.config.ModelConfig)
    train:       steps, batch_size, learning_rate, ... (ardm.train.TrainConfig)
    eval:        samples_per_image, batch_size, max_images, sample_grid      (ardm.config.EvalConfig)
    resources:   workers_per_trial, cpus_per_worker, gpus_per_worker
    postprocess: budgets (ints and/or "full"), table_samples_per_step, orders_per_image, max_images,
                 sort_decreasing
    tracking:    uri (default: sqlite:///<cwd>/mlflow.db), experiment (default: the sweep name)
    storage:     path (local, NFS or s3://; default runs/sweeps under the working directory)
    failure:     train_max_failures (worker restarts within a trial), trial_max_failures (Tune retries)

Any field's value may be a search space instead: {grid: [a, b, ...]}, {choice: [a, b, ...]},
{uniform: [low, high]} or {loguniform: [low, high]}. Every candidate is validated against the
field's type. `--set a.b=VALUE` overrides a field (or sets a space, e.g. --set 'model.branching={grid: [2, 4]}').
Errors are ConfigError "FILE: FIELD.PATH: what was expected".
"""

from __future__ import annotations

import copy
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ardm.config import ConfigError, EvalConfig, ModelConfig, apply_override, build
from ardm.data import DataError, parse_spec
from ardm.train import TrainConfig

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform")


@dataclass(frozen=True)
class SweepSection:
    """name: the sweep's name (MLflow experiment default, storage folder); num_samples: how many
    times the grid is repeated, with random spaces drawn anew each time; seed: for those draws."""

    name: str
    num_samples: int = 1
    max_concurrent_trials: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty string without '/', got {self.name!r}")
        if self.num_samples < 1 or self.max_concurrent_trials < 0:
            raise ValueError("num_samples must be >= 1 and max_concurrent_trials >= 0")


@dataclass(frozen=True)
class DataSection:
    """spec: dataset spec string; rows_per_shard: Parquet shard size when the driver converts it."""

    spec: str
    rows_per_shard: int = 10000

    def __post_init__(self) -> None:
        try:
            parse_spec(self.spec)
        except DataError as err:
            raise ValueError(f"spec: {err}") from err
        if self.rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {self.rows_per_shard}")


@dataclass(frozen=True)
class ResourcesSection:
    """Per trial: Ray Train workers (data-parallel ranks), and CPUs and GPUs for each of them."""

    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def __post_init__(self) -> None:
        if self.workers_per_trial < 1:
            raise ValueError(f"workers_per_trial must be >= 1, got {self.workers_per_trial}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker < 0:
            raise ValueError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


@dataclass(frozen=True)
class PostprocessSection:
    """Budgets (network calls; "full" is the model's step count S*D) and step-table settings."""

    budgets: tuple[int | str, ...] = ("full",)
    table_samples_per_step: int = 16
    orders_per_image: int = 1
    max_images: int = 0
    sort_decreasing: bool = True

    def __post_init__(self) -> None:
        for b in self.budgets:
            if isinstance(b, str) and b != "full" or isinstance(b, int) and b < 1:
                raise ValueError(f"budgets: each must be an integer >= 1 or 'full', got {b!r}")
        if self.table_samples_per_step < 2 or self.orders_per_image < 1 or self.max_images < 0:
            raise ValueError("table_samples_per_step must be >= 2, orders_per_image >= 1, max_images >= 0")

    def resolve_budgets(self, num_stages: int, num_steps: int) -> list[int]:
        """The budgets for one model, "full" replaced by its step count; out of range -> ValueError."""
        budgets = sorted({num_steps if b == "full" else int(b) for b in self.budgets})
        bad = [b for b in budgets if not num_stages <= b <= num_steps]
        if bad:
            raise ValueError(f"postprocess.budgets: {bad} outside {num_stages}..{num_steps} for this model")
        return budgets


@dataclass(frozen=True)
class TrackingSection:
    uri: str = ""
    experiment: str = ""


@dataclass(frozen=True)
class StorageSection:
    """Where checkpoints, Parquet shards, tables and Tune state go: a path (local or NFS, made
    absolute against the working directory) or a URI such as s3://bucket/prefix."""

    path: str = "runs/sweeps"


@dataclass(frozen=True)
class FailureSection:
    train_max_failures: int = 2
    trial_max_failures: int = 1

    def __post_init__(self) -> None:
        if self.train_max_failures < -1 or self.trial_max_failures < -1:
            raise ValueError("max failures must be >= 0, or -1 for unlimited")


@dataclass(frozen=True)
class SweepConfig:
    """One sweep (or, with every search space resolved, one trial)."""

    sweep: SweepSection
    data: DataSection
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    postprocess: PostprocessSection = field(default_factory=PostprocessSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    storage: StorageSection = field(default_factory=StorageSection)
    failure: FailureSection = field(default_factory=FailureSection)

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.sweep.name


@dataclass(frozen=True)
class Space:
    """A search space on one field: kind in SPACE_KINDS; values (grid/choice) or (low, high)."""

    kind: str
    values: tuple


@dataclass
class Sweep:
    """A validated sweep file: the raw base (spaces still in place), the spaces by field path,
    and the base config with every space at its first value (for sweep-level settings)."""

    path: Path
    raw: dict
    spaces: dict[tuple[str, ...], Space]
    base: SweepConfig

    def trial_dicts(self) -> list[dict]:
        """Concrete trial configs as Tune would draw them (grid product x num_samples); for --dry-run."""
        rng = random.Random(self.base.sweep.seed)
        grids = {p: s.values for p, s in self.spaces.items() if s.kind == "grid"}
        trials = []
        for _ in range(self.base.sweep.num_samples):
            for combo in itertools.product(*grids.values()):
                values = dict(zip(grids, combo, strict=True))
                for p, s in self.spaces.items():
                    if s.kind == "choice":
                        values[p] = rng.choice(s.values)
                    elif s.kind == "uniform":
                        values[p] = rng.uniform(*s.values)
                    elif s.kind == "loguniform":
                        values[p] = math.exp(rng.uniform(math.log(s.values[0]), math.log(s.values[1])))
                trials.append(resolve(self.raw, values))
        return trials


def _parse_space(node: Any, path: tuple[str, ...]) -> Space | None:
    if not (isinstance(node, dict) and len(node) == 1 and next(iter(node)) in SPACE_KINDS):
        return None
    kind, values = next(iter(node.items()))
    where = ".".join(path)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}.{kind}: expected a non-empty list")
    if kind in ("uniform", "loguniform"):
        if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}.{kind}: expected [low, high] numbers, got {values!r}")
        if not values[0] < values[1] or kind == "loguniform" and values[0] <= 0:
            raise ConfigError(f"{where}.{kind}: expected 0 < low < high for loguniform, low < high for uniform")
        values = [float(v) for v in values]
    return Space(kind, tuple(values))


def find_spaces(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Space]:
    """Every search space in a raw config, by field path."""
    space = _parse_space(node, path)
    if space is not None:
        return {path: space}
    if isinstance(node, dict):
        found: dict[tuple[str, ...], Space] = {}
        for key, value in node.items():
            found.update(find_spaces(value, (*path, str(key))))
        return found
    return {}


def resolve(raw: dict, values: dict[tuple[str, ...], Any]) -> dict:
    """A copy of the raw config with the field at each path set to its value."""
    out = copy.deepcopy(raw)
    for path, value in values.items():
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return out


def absolute_storage(raw: dict) -> None:
    """Make a local storage path absolute against the working directory (in place), so trials on
    any node and a resumed sweep agree, wherever the sweep file lies."""
    storage = raw.setdefault("storage", {})
    if not isinstance(storage, dict):
        return
    path = storage.get("path", StorageSection.path)
    if isinstance(path, str) and "://" not in path:
        storage["path"] = str(Path(path).expanduser().absolute())


def load_sweep(path: str | Path, overrides: list[str] = ()) -> Sweep:
    """Read, override and validate a sweep file; ConfigError names FILE: FIELD.PATH on any problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    try:
        if not isinstance(raw, dict):
            raise ConfigError("expected a mapping of sections (sweep, data, model, train, ...)")
        for assignment in overrides:
            apply_override(raw, assignment)
        absolute_storage(raw)
        spaces = find_spaces(raw)
        firsts = {p: s.values[0] for p, s in spaces.items()}
        base = build(SweepConfig, resolve(raw, firsts))
        for p, space in spaces.items():
            for candidate in space.values:  # every grid/choice value, or both bounds of a range
                build(SweepConfig, resolve(raw, {**firsts, p: candidate}))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return Sweep(path=path, raw=raw, spaces=spaces, base=base)


def trial_label(values: dict[tuple[str, ...], Any]) -> str:
    """A short, readable name for the searched values: 'branching=4,learning_rate=0.0003'."""
    parts = []
    for path, value in sorted(values.items()):
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{path[-1]}={shown}")
    return ",".join(parts) or "base"
