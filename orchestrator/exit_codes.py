"""How an `ardm` command ends: its exit code and, when an exception ends it, the one line on stderr.

    0    done
    1    the work failed: training diverged, a trial or a cluster job failed
    2    bad input: a config, data, checkpoint, budget or URI that cannot work, a service that does
         not answer, or a write that runs out of space; one line naming what and where
    130  interrupted (the shell's code for a process stopped by SIGINT)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ardm.checkpoint import CheckpointError
from ardm.compression import CompressionError
from ardm.config import ConfigError
from ardm.data import DataError
from ardm.storage import OutOfSpaceError
from ardm.train import NonFiniteLossError
from orchestrator.lock import SweepBusyError
from orchestrator.tracking import TrackingError

OK, FAILED, BAD_INPUT, INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class Ending:
    """Exceptions of `errors` end a command with `code`, printing "ardm: " + line (where {err} is the
    exception's message)."""

    errors: tuple[type[BaseException], ...]
    code: int
    line: str


def bad_input(*errors: type[BaseException]) -> Ending:
    return Ending(errors, BAD_INPUT, "error: {err}")


ENDINGS = (
    # What the user must fix before a rerun: the input, or the machine (a full disk).
    bad_input(ConfigError, DataError, CheckpointError, CompressionError, TrackingError, SweepBusyError,
              OutOfSpaceError),
    Ending((NonFiniteLossError,), FAILED, "training stopped: {err}"),
)


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                endings: Sequence[Ending] = ()) -> int:
    """`command(args)`'s exit code. An exception of one of `endings` (a command's own, looked at
    first) or of ENDINGS prints its line on stderr and ends with its code; any other propagates."""
    try:
        return command(args)
    except BaseException as err:
        for ending in (*endings, *ENDINGS):
            if isinstance(err, ending.errors):
                print("ardm: " + ending.line.format(err=err), file=sys.stderr)
                return ending.code
        raise
