"""Progress of long work, in one place: every bar names its work (budget, policy, stage).

On a terminal (stderr a TTY) a tqdm bar; otherwise (a log file, a pipe, a Ray worker's log) no
carriage-return frames but one plain line per finished unit, and one per report (`set_postfix`,
e.g. training's logged bpd); with progress off, nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm


class PlainProgress:
    """The part of tqdm's interface the library uses, writing whole lines for output that is not a terminal."""

    def __init__(self, iterable: Iterable | None, desc: str, total: int | None, initial: int = 0) -> None:
        self.iterable, self.desc, self.n = iterable, desc, initial
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.started, self.closed = time.perf_counter(), False

    def _line(self, text: str) -> None:
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.desc}: {self.n}{of} {text}", file=sys.stderr, flush=True)

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: object) -> None:
        self._line(", ".join(f"{k}={v}" for k, v in values.items()))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line(f"done in {time.perf_counter() - self.started:.1f} s")

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        # An exception is not a finished unit: say nothing rather than "done".
        self.closed = self.closed or exc[0] is not None
        self.close()


def progress(
    iterable: Iterable | None = None, *, desc: str, total: int | None = None, enabled: bool = True, initial: int = 0,
    **bar_options: object,
) -> tqdm | PlainProgress:
    """A progress bar over `iterable` (or updated by hand up to `total`) whose description `desc`
    names the work, e.g. "budget 20 calls (5/stage), policy naive". Use as an iterable or a context
    manager; `update`, `set_postfix` and `close` work in every mode. bar_options (e.g. unit="B")
    only shape the terminal's bar."""
    if enabled and not sys.stderr.isatty():
        return PlainProgress(iterable, desc, total, initial)
    return tqdm(iterable, desc=desc, total=total, initial=initial, disable=not enabled, mininterval=1.0, **bar_options)


def note(text: str, enabled: bool = True) -> None:
    """One line on stderr that does not break a live bar (a reused result, a resumed run)."""
    if enabled:
        tqdm.write(text, file=sys.stderr)
