"""Sweep files: one YAML schema, validated into typed dataclasses before anything starts.

A sweep file has these sections (see sweeps/*.yaml for complete examples):

    sweep:       name, num_samples, max_concurrent_trials (0: derived from the cluster), seed
    data:        spec (a dataset spec, e.g. cifar10:/path or photos:8), rows_per_shard;
                 `data: SPEC` is short for `data: {spec: SPEC}`, the form run configs use
    model:       preset, network (field overrides), branching, parameterization   (ardm.config.ModelConfig)
    train:       steps, batch_size, learning_rate, ... (ardm.train.TrainConfig)
    eval:        samples_per_image, batch_size, max_images, sample_grid      (ardm.config.EvalConfig)
    resources:   workers_per_trial, cpus_per_worker, gpus_per_worker
    postprocess: enabled, budgets (total calls, "N/stage" and/or "full"), table_split, table_images,
                 table_samples_per_step, table_ranges,
                 steps_per_call, orders_per_image, max_images, sample_grid, sort_decreasing,
                 compression (budgets, max_images, orders, order_images)
    tracking:    uri (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db), experiment (default: the
                 sweep name)
    storage:     path (local, NFS or s3://; default runs/sweeps under the working directory)
    failure:     train_max_failures (worker restarts within a trial), trial_max_failures (Tune retries)

Any field's value may be a search space instead: {grid: [a, b, ...]}, {choice: [a, b, ...]},
{uniform: [low, high]} or {loguniform: [low, high]}. Every candidate is validated against the
field's type. `--set a.b=VALUE` overrides a field (or sets a space, e.g. --set 'model.branching={grid: [2, 4]}').
Errors are ConfigError "FILE: FIELD.PATH: what was expected". What needs the data as well (is it
there and readable, do the post-processing budgets fit every trial's model) is checked by
`check_data` and `check_budgets_fit`, on the driver before Ray starts and by `ardm sweep --dry-run`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ardm.budgets import parse_budget, resolve_budget
from ardm.config import ConfigError, EvalConfig, ModelConfig, apply_override, build, did_you_mean, read_yaml
from ardm.data import DataError, load_dataset, parse_spec
from ardm.data.dataset import SPLITS
from ardm.storage import is_uri
from ardm.train import TrainConfig
from ardm.upscale import num_stages_for

SPACE_KINDS = ("grid", "choice", "uniform", "loguniform")


@dataclass(frozen=True)
class SweepSection:
    """name: the sweep's name (MLflow experiment default, storage folder); num_samples: how many
    times the grid is repeated, with random spaces drawn anew each time; seed: for those draws (Tune's
    variant generator, orchestrator/variants.py)."""

    name: str
    num_samples: int = 1
    max_concurrent_trials: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"name must be a non-empty string without '/', got {self.name!r}")
        if self.num_samples < 1 or self.max_concurrent_trials < 0:
            raise ValueError("num_samples must be >= 1 and max_concurrent_trials >= 0")
        if self.seed < 0:  # Tune's searcher seeds numpy, which refuses negative seeds only once trials start
            raise ValueError(f"seed must be >= 0, got {self.seed}")


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
        # Written as `not >` so that .nan (a valid YAML float) is refused too.
        if not (self.cpus_per_worker > 0 and self.gpus_per_worker >= 0):
            raise ValueError("cpus_per_worker must be > 0 and gpus_per_worker >= 0")

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0


def _check_budget_values(budgets: tuple, field: str) -> None:
    for b in budgets:
        try:
            parse_budget(b)
        except ValueError:
            raise ValueError(f"{field}: each must be an integer >= 1, 'N/stage' or 'full', got {b!r}") from None


def _resolve_budgets(budgets: tuple, field: str, num_stages: int, num_steps: int) -> list[int]:
    """The budgets for one model in total calls (ardm.budgets.resolve_budget); out of range -> ValueError."""
    try:
        resolved = sorted({resolve_budget(b, num_stages, num_steps // num_stages) for b in budgets})
    except ValueError as err:
        raise ValueError(f"{field}: {err} for this model") from None
    bad = [b for b in resolved if not num_stages <= b <= num_steps]
    if bad:
        raise ValueError(f"{field}: {bad} outside {num_stages}..{num_steps} for this model")
    return resolved


@dataclass(frozen=True)
class CompressionSection:
    """Lossless compression of max_images test images (spread over the split) at each budget
    (total calls, "N/stage" or "full"; none by default), with the optimal policy and the order
    chosen as the best of `orders` seeds on `order_images` training images, as the paper does;
    logged as compressed_bpd_<k>."""

    budgets: tuple[int | str, ...] = ()
    max_images: int = 16
    orders: int = 5
    order_images: int = 64

    def __post_init__(self) -> None:
        _check_budget_values(self.budgets, "budgets")
        if self.max_images < 1 or self.orders < 1 or self.order_images < 1:
            raise ValueError("max_images, orders and order_images must be >= 1")


@dataclass(frozen=True)
class PostprocessSection:
    """What runs after a trial's training (orchestrator/postprocess.py), on the test split.

    budgets: network calls per generation: total calls (20), calls per stage ("500/stage", S x 500
    in all, the paper's unit for upscale models) or "full" (the model's step count S*D); the step table
    gets table_samples_per_step (image, order) draws per step from table_images images (0: all) of
    table_split ("train": never the measured images; "test" on request, and the report then says
    so), in table_ranges Ray tasks of whole multiples of steps_per_call steps; each policy's bpd
    is measured with orders_per_image random
    orders per image on max_images test images (0: all; else spread evenly over the split);
    sample_grid images are drawn per budget (0: no grids); sort_decreasing sorts the table before
    the DP, as the paper does.
    """

    enabled: bool = True
    budgets: tuple[int | str, ...] = ("full",)
    table_split: str = "train"
    table_images: int = 0
    table_samples_per_step: int = 16
    table_ranges: int = 4
    steps_per_call: int = 16
    orders_per_image: int = 1
    max_images: int = 0
    sample_grid: int = 16
    sort_decreasing: bool = True
    compression: CompressionSection = field(default_factory=CompressionSection)

    def __post_init__(self) -> None:
        if not self.budgets:
            raise ValueError("budgets: give at least one budget")
        if self.table_split not in SPLITS or self.table_images < 0:
            raise ValueError(f"table_split must be one of {', '.join(SPLITS)} and table_images >= 0")
        _check_budget_values(self.budgets, "budgets")
        if self.table_samples_per_step < 2 or self.orders_per_image < 1 or self.max_images < 0:
            raise ValueError("table_samples_per_step must be >= 2, orders_per_image >= 1, max_images >= 0")
        if self.table_ranges < 1 or self.steps_per_call < 1 or self.sample_grid < 0:
            raise ValueError("table_ranges and steps_per_call must be >= 1, sample_grid >= 0")

    def resolve_budgets(self, num_stages: int, num_steps: int) -> list[int]:
        """The budgets for one model, "full" replaced by its step count; a budget of either list
        (these and compression's) out of range -> ValueError."""
        self.resolve_compression_budgets(num_stages, num_steps)
        return _resolve_budgets(self.budgets, "postprocess.budgets", num_stages, num_steps)

    def resolve_compression_budgets(self, num_stages: int, num_steps: int) -> list[int]:
        return _resolve_budgets(self.compression.budgets, "postprocess.compression.budgets", num_stages, num_steps)


@dataclass(frozen=True)
class TrackingSection:
    """uri: MLflow tracking URI ("": $MLFLOW_TRACKING_URI, else the local SQLite file); experiment:
    default the sweep's name; system_metrics_interval_s: how often rank 0's machine is sampled for
    MLflow's system metrics (0: not at all); register_model: a registered-model name under which
    every trial's logged model becomes a version ("": none)."""

    uri: str = ""
    experiment: str = ""
    system_metrics_interval_s: float = 10.0
    register_model: str = ""

    def __post_init__(self) -> None:
        if not self.system_metrics_interval_s >= 0:
            raise ValueError(f"system_metrics_interval_s must be >= 0, got {self.system_metrics_interval_s}")


@dataclass(frozen=True)
class StorageSection:
    """Where checkpoints, Parquet shards, tables and Tune state go: a path (local or NFS, made
    absolute against the working directory) or a URI such as s3://bucket/prefix."""

    path: str = "runs/sweeps"


@dataclass(frozen=True)
class FailureSection:
    """How a trial survives faults (-1: unlimited where a count is asked for).

    train_max_failures: restarts of a trial's Ray Train worker group after a worker error (a process
    or node lost), from its latest checkpoint; preemption_max_restarts: restarts after a node that Ray
    drains for preemption (spot reclaim, `ray drain-node`), counted apart: they are not the run's
    fault; trial_max_failures: Tune's retries of a whole trial. placement_timeout_s: seconds Ray Train
    waits for the cluster to place a worker group (at the start and after each restart; an autoscaler
    may need minutes to bring up a node), tried placement_retries more times before the trial fails
    with the node it lost, so a group no node can take fails in bounded time instead of waiting forever.
    """

    train_max_failures: int = 2
    preemption_max_restarts: int = -1
    trial_max_failures: int = 1
    placement_timeout_s: float = 600.0
    placement_retries: int = 1

    def __post_init__(self) -> None:
        if min(self.train_max_failures, self.preemption_max_restarts, self.trial_max_failures) < -1:
            raise ValueError("max failures must be >= 0, or -1 for unlimited")
        # Written as `not >` so that .nan is refused too; no unlimited retries: the point is a bounded wait.
        if not self.placement_timeout_s > 0 or self.placement_retries < 0:
            raise ValueError("placement_timeout_s must be > 0 and placement_retries >= 0")


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


def find_spaces(node: Any, path: tuple[str, ...] = (), hint: Any = None) -> dict[tuple[str, ...], Space]:
    """Every search space in a raw config, by field path. `hint` is the type the field at `path`
    takes (SweepConfig at the root; None: not known): a mapping where a value belongs can only be
    a search space, so a mistyped kind is named as such rather than as a value of the wrong type."""
    space = _parse_space(node, path)
    if space is not None:
        return {path: space}
    if not isinstance(node, dict) or not node:
        return {}
    fields = typing.get_type_hints(hint) if dataclasses.is_dataclass(hint) else {}
    if hint is not None and not fields and hint is not dict and typing.get_origin(hint) is not dict:
        where, kinds = ".".join(path), ", ".join(map(str, node))
        if len(node) > 1:
            raise ConfigError(f"{where}: expected a value or one search space ({', '.join(SPACE_KINDS)}), got {kinds}")
        raise ConfigError(f"{where}: unknown search space {kinds}; {did_you_mean(kinds, SPACE_KINDS)}")
    found: dict[tuple[str, ...], Space] = {}
    for key, value in node.items():
        found.update(find_spaces(value, (*path, str(key)), fields.get(key)))
    return found


def resolve(raw: dict, values: dict[tuple[str, ...], Any]) -> dict:
    """A copy of the raw config with the field at each path set to its value."""
    out = copy.deepcopy(raw)
    for path, value in values.items():
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return out


def absolute_storage(raw: dict, base_dir: str | None = None) -> None:
    """Make a local storage path absolute (in place) against `base_dir` (default: the working directory),
    so trials on any node and a resumed sweep agree, wherever the sweep file lies. A `base_dir` of
    another machine (`~` of the head, for `ardm submit`) is joined as written, not expanded here."""
    storage = raw.setdefault("storage", {})
    if not isinstance(storage, dict):
        return
    path = storage.get("path", StorageSection.path)
    if isinstance(path, str) and not is_uri(path):
        if base_dir is None:
            storage["path"] = str(Path(path).expanduser().absolute())
        elif not (path.startswith(("/", "~"))):
            storage["path"] = f"{base_dir.rstrip('/')}/{path.removeprefix('./')}"


def expand_data_shorthand(raw: dict) -> None:
    """`data: SPEC` -> `data: {spec: SPEC}` in place, as run configs write it; likewise a search space
    of specs, `data: {grid: [SPEC, ...]}` -> `data: {spec: {grid: [SPEC, ...]}}`."""
    data = raw.get("data")
    space = isinstance(data, dict) and len(data) == 1 and next(iter(data)) in SPACE_KINDS
    candidates = next(iter(data.values())) if space else [data]
    if isinstance(candidates, list) and candidates and all(isinstance(c, str) for c in candidates):
        raw["data"] = {"spec": data}


def load_sweep(path: str | Path, overrides: list[str] = (), base_dir: str | None = None) -> Sweep:
    """Read, override and validate a sweep file; ConfigError names FILE: FIELD.PATH on any problem.
    base_dir: what a relative storage.path is relative to (absolute_storage)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        if raw is None:
            raise ConfigError("empty file (expected the sections sweep, data, model, train, ...)")
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a mapping of sections (sweep, data, ...), got {type(raw).__name__}")
        expand_data_shorthand(raw)  # so that --set data.spec=... applies to a file that uses it
        for assignment in overrides:
            apply_override(raw, assignment, SweepConfig)
        expand_data_shorthand(raw)  # and --set data=SPEC
        absolute_storage(raw, base_dir)
        spaces = find_spaces(raw, hint=SweepConfig)
        firsts = {p: s.values[0] for p, s in spaces.items()}
        base = build(SweepConfig, resolve(raw, firsts))
        for p, space in spaces.items():
            for candidate in space.values:  # every grid/choice value, or both bounds of a range
                build(SweepConfig, resolve(raw, {**firsts, p: candidate}))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return Sweep(path=path, raw=raw, spaces=spaces, base=base)


def check_data(sweep: Sweep) -> tuple[tuple[int, int, int], int]:
    """((C, H, W), K) of the sweep's dataset, after checking that it can be read, so that a missing
    path or a corrupt file fails on the driver, before Ray starts, as ConfigError "FILE: data.spec: ...".

    Parquet shards (which workers read as they are) are all read and checked against the manifest's
    hashes (unless the spec says verify=0); other sources are converted to shards by the driver later,
    so reading their test split here is enough. A searched data.spec is checked at its first value.
    """
    spec = parse_spec(sweep.base.data.spec)
    try:
        if spec.kind == "parquet":
            for split in ("train", "test"):
                dataset = load_dataset(spec, split)
        else:
            dataset = load_dataset(spec, "test")
    except DataError as err:
        raise ConfigError(f"{sweep.path}: data.spec: {err}") from err
    return dataset.shape, dataset.num_classes


def _overlaps(path: tuple[str, ...], target: tuple[str, ...]) -> bool:
    """Whether a space at `path` can change the field at `target` (one is a prefix of the other)."""
    n = min(len(path), len(target))
    return path[:n] == target[:n]


# The fields that decide whether a trial's budgets fit its model: S = stages of (K, branching), S*D steps.
_BUDGET_FIELDS = (("model", "branching"), ("postprocess", "budgets"), ("postprocess", "enabled"))


def check_budgets_fit(sweep: Sweep, shape: tuple[int, int, int], num_classes: int) -> None:
    """Raise ConfigError "FILE: postprocess.budgets: ..." unless, in every trial configuration the
    sweep can draw, each post-processing budget lies in S..S*D for that trial's model on data of
    `shape` (C, H, W) with K = `num_classes` (see `check_data`).

    Every candidate of each search space on the fields involved is combined with every other, as
    load_sweep does for single fields; the other spaces stay at their first values.
    """
    involved = {p: s for p, s in sweep.spaces.items() if any(_overlaps(p, f) for f in _BUDGET_FIELDS)}
    firsts = {p: s.values[0] for p, s in sweep.spaces.items()}
    num_variables = math.prod(shape)
    for combo in itertools.product(*(s.values for s in involved.values())):
        try:  # load_sweep checked each candidate alone; this combination may still be invalid
            cfg = build(SweepConfig, resolve(sweep.raw, {**firsts, **dict(zip(involved, combo, strict=True))}))
        except ConfigError as err:
            raise ConfigError(f"{sweep.path}: {err}") from err
        if not cfg.postprocess.enabled:
            continue
        stages = num_stages_for(num_classes, cfg.model.branching)
        try:
            cfg.postprocess.resolve_budgets(stages, stages * num_variables)
        except ValueError as err:
            shown = "x".join(map(str, shape))
            raise ConfigError(
                f"{sweep.path}: {err} (model.branching={cfg.model.branching} on {shown} images with "
                f"K={num_classes}: {stages} stage(s) of {num_variables} steps)"
            ) from err


def trial_label(config: dict, paths: Iterable[tuple[str, ...]]) -> str:
    """A short, readable name for a trial's values of the searched fields (`paths`, e.g.
    [("model", "branching")]) in its resolved config: 'branching=4,learning_rate=0.0003'."""
    values = {}
    for path in paths:
        node = config
        for key in path:
            node = node[key]
        values[path] = node
    parts = []
    for path, value in sorted(values.items()):
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{path[-1]}={shown}")
    return ",".join(parts) or "base"
