"""Run configuration as data: YAML validated into typed dataclasses, with one-line errors.

A run config has the sections `data` (a dataset spec string), `model`, `train`, `eval` and
`output`; see configs/*.yaml. `load_config(path, overrides)` validates everything before any
work starts; every error is a ConfigError "FILE: FIELD.PATH: what was expected".
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ardm.data import DataError, parse_spec
from ardm.networks import PRESETS, ArchitectureConfig
from ardm.train import TrainConfig
from ardm.upscale import PARAMETERIZATIONS


class ConfigError(ValueError):
    """A config problem, as one line naming the file, the field path and what was expected."""


def did_you_mean(word: str, choices: Iterable[str], path: str = "") -> str:
    """"did you mean PATH.X?" for the choice X closest to a mistyped `word`, else "expected one of [...]"."""
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {_join(path, close[0])}?" if close else f"expected one of {choices}"


@dataclass(frozen=True)
class ModelConfig:
    """The ARDM: a network preset (plus field overrides), branching factor and parameterization.

    branching >= K gives the order-agnostic ARDM (one stage).
    """

    preset: str = "cpu-small"
    network: dict = field(default_factory=dict)
    branching: int = 256
    parameterization: str = "data"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.branching < 2:
            raise ValueError(f"branching must be >= 2, got {self.branching}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {list(PARAMETERIZATIONS)}, got {self.parameterization!r}"
            )
        known = {f.name for f in dataclasses.fields(PRESETS[self.preset])}
        for key in self.network:  # here rather than in from_dict, to name the close field as the file does
            if key not in known:
                raise ValueError(f"network.{key}: unknown field; {did_you_mean(key, known, 'network')}")
        self.network_config()  # validate overrides now, not at build time

    def network_config(self) -> ArchitectureConfig:
        """The preset with `network` overrides applied (a U-Net's or a transformer's configuration)."""
        preset = PRESETS[self.preset]
        return type(preset).from_dict({**preset.to_dict(), **self.network})


@dataclass(frozen=True)
class EvalConfig:
    """Test-set evaluation after training: Monte Carlo draws per image, batch size, and how many
    samples go into the PNG grid (0: none)."""

    samples_per_image: int = 4
    batch_size: int = 256
    max_images: int = 0
    sample_grid: int = 16

    def __post_init__(self) -> None:
        if self.samples_per_image < 1 or self.batch_size < 1:
            raise ValueError("samples_per_image and batch_size must be >= 1")
        if self.max_images < 0 or self.sample_grid < 0:
            raise ValueError("max_images and sample_grid must be >= 0 (0: all images / no grid)")


@dataclass(frozen=True)
class RunConfig:
    """One training run: data spec, model, training, evaluation and the output folder."""

    data: str
    output: str
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        try:
            parse_spec(self.data)  # catch a malformed spec now; the files are read when the run starts
        except DataError as err:
            raise ValueError(f"data: {err}") from err

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build(cls: type, data: Any, path: str = "") -> Any:
    """Validate a plain mapping into dataclass `cls`, recursively; errors raise ConfigError(path: ...)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"{_join(path, key)}: unknown field; {did_you_mean(key, known, path)}")
    kwargs = {key: _coerce(hints[key], value, _join(path, key)) for key, value in data.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{_join(path, missing[0])}: required field missing")
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from err


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, path)
            except ConfigError as err:
                errors.append(str(err).partition(": ")[2])
        raise ConfigError(f"{path}: {' or '.join(errors)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {hint}")


def apply_override(data: dict, assignment: str, schema: type) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (so 4, 1e-3, true, [1,2]).

    `schema` (the config's dataclass) is checked first: a mistyped key is the override's fault, and
    reported as such, not blamed on the file it is applied to.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment}: expected KEY.PATH=VALUE")
    *parents, leaf = key.split(".")
    _check_override_key(schema, key, assignment)
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def _check_override_key(schema: type, key: str, assignment: str) -> None:
    """ConfigError "--set ASSIGNMENT: ..." unless the dotted `key` names a field of dataclass `schema`."""
    hint: Any = schema
    done: list[str] = []
    for part in key.split("."):
        if hint is dict or typing.get_origin(hint) is dict:
            return  # a free-form mapping (model.network): its keys are checked when it is built
        if not dataclasses.is_dataclass(hint):
            raise ConfigError(f"--set {assignment}: {done[-1]} is not a section")
        fields = typing.get_type_hints(hint)
        parent = ".".join(done)
        if part not in fields:
            raise ConfigError(
                f"--set {assignment}: unknown field {_join(parent, part)}; {did_you_mean(part, fields, parent)}"
            )
        done.append(part)
        hint = fields[part]


def read_yaml(path: Path) -> Any:
    """The parsed YAML document in `path`; ConfigError "FILE: ..." if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: file not found") from err
    except IsADirectoryError as err:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from err
    except UnicodeDecodeError as err:  # a binary file, e.g. a checkpoint passed by mistake
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.start}: {err.reason})") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror or err})") from err
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:  # the usual case: name where it went wrong
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = err.problem or err.context or "cannot be parsed"
        raise ConfigError(f"{path}: not valid YAML ({where}{problem})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from err


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config, apply `--set` overrides, validate; ConfigError names FILE: FIELD."""
    path = Path(path)
    data = read_yaml(path)
    data = data if data is not None else {}
    try:
        for assignment in overrides:
            apply_override(data, assignment, RunConfig)
        return build(RunConfig, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
