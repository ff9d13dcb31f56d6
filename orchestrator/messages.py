"""Values and exceptions as one line, for error messages, tags and warnings."""

from __future__ import annotations

TRUNCATED = "...[truncated]"  # marks a value cut to fit a limit


def one_line(value: object, limit: int) -> str:
    """`value` as one line (runs of whitespace, newlines included, become one space) of at most
    `limit` characters; an exception without a message is named by its type."""
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        text = type(value).__name__
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


def describe(err: BaseException) -> str:
    """"Type: the first line of its message", e.g. "ConnectionRefusedError: [Errno 111] Connection refused"."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
