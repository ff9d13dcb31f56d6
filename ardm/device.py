"""The device a model runs on when a command names none."""

from __future__ import annotations

import torch


def choose_device(name: str | None = None) -> str:
    """`name` (cpu, cuda, cuda:1, ...) when given, else cuda where a GPU is available, else cpu."""
    return name or ("cuda" if torch.cuda.is_available() else "cpu")
