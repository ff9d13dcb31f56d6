"""The pieces the `ardm` commands' parsers share: the options several commands take, as argparse parent
parsers; options whose default is a config dataclass's field (or a library function's parameter), so
that each default is written once, where the setting is defined; and a help formatter that shows
every option's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ardm.data.dataset import SPLITS

CHECKPOINT_HELP = ("the model: a checkpoint file, runs:/RUN_ID/path, models:/MODEL_ID, models:/NAME/VERSION, "
                   "models:/NAME@alias or a trial's run id (MLflow: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
TRACKING_URI_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)"
QUIET_HELP = "no progress: neither bars (on a terminal) nor a line per finished unit (otherwise)"
DEVICE_HELP = "where the model runs: cpu, cuda or cuda:N (default: cuda when available)"
BATCH_SIZE_HELP = "images per batch of network calls"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with each option's default after its help: not for flags (their default
    is only "not given"), options without a default, or a help that already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if action.nargs == 0 or default is None or default is argparse.SUPPRESS or default == [] or "default" in text:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, tuple | list) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"  # argparse %-formats the help


def add_command(subparsers: argparse._SubParsersAction, name: str, help: str,
                parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """A subcommand whose `--help` starts with `help` and shows the options' defaults."""
    return subparsers.add_parser(name, help=help, description=help, parents=list(parents),
                                 formatter_class=HelpFormatter)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def checkpoint_option() -> argparse.ArgumentParser:
    """`--checkpoint` (required): the commands' main turns an MLflow reference into a local file."""
    parent = _parent()
    parent.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    return parent


def device_option(default: str | None = None, help: str = DEVICE_HELP) -> argparse.ArgumentParser:
    """`--device`: None is resolved to the best device at hand by the commands' main."""
    parent = _parent()
    parent.add_argument("--device", default=default, help=help)
    return parent


def seed_option() -> argparse.ArgumentParser:
    """`--seed`, default 0: the same seed gives the same images, orders and draws."""
    parent = _parent()
    parent.add_argument("--seed", type=int, default=0, help="seed of the random choices: images, orders and draws")
    return parent


def batch_size_option(default: int) -> argparse.ArgumentParser:
    """`--batch-size` with the default of the library function or config field the command runs."""
    parent = _parent()
    parent.add_argument("--batch-size", type=int, default=default, help=BATCH_SIZE_HELP)
    return parent


def quiet_option() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    return parent


def tracking_uri_option() -> argparse.ArgumentParser:
    parent = _parent()
    parent.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    return parent


def add_split_option(parser: argparse.ArgumentParser, help: str, default: str = "test", flag: str = "--split",
                     dest: str | None = None) -> None:
    """A dataset split: one of ardm.data's SPLITS."""
    parser.add_argument(flag, dest=dest, default=default, choices=SPLITS, help=help)


def default_of(owner: type | Callable, name: str) -> Any:
    """The default of setting `name` of `owner`: a dataclass's field, or a function's parameter."""
    if dataclasses.is_dataclass(owner):
        field = {f.name: f for f in dataclasses.fields(owner)}[name]
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return field.default
    return inspect.signature(owner).parameters[name].default


def add_field_option(parser: argparse.ArgumentParser, owner: type | Callable, name: str, help: str, *,
                     flag: str | None = None, **kwargs: Any) -> None:
    """An option for setting `name` of `owner` (see default_of), stored under `name`: its default is
    the one defined there and its type that default's (kwargs may give another type, or choices).

    The flag is `--<name with dashes>` unless given. A boolean setting becomes a flag that turns
    its default around (`--no-...` for one true by default: give its name).
    """
    default = default_of(owner, name)
    flag = flag or "--" + name.replace("_", "-")
    if isinstance(default, bool):
        parser.add_argument(flag, dest=name, action="store_false" if default else "store_true", help=help)
        return
    kwargs.setdefault("type", type(default))
    if "choices" not in kwargs:  # named after the flag, not the field: --samples N, not SAMPLE_GRID
        kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
    parser.add_argument(flag, dest=name, default=default, help=help, **kwargs)


def comma_list(text: str) -> list[str]:
    """An option's comma-separated values, split only: the values are checked where they are used."""
    return [v.strip() for v in text.split(",") if v.strip()]


def field_values(args: argparse.Namespace, owner: type) -> dict[str, Any]:
    """The parsed values of the options add_field_option made for `owner`'s fields, by field name:
    the mapping to validate into the dataclass (ardm.config.build)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(owner) if hasattr(args, f.name)}
