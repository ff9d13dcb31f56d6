"""Architecture of the ARDM network: the `NetworkConfig` dataclass and its validation.

It holds the architecture only; the data-dependent sizes (shape, K, S, number of outputs, number
of steps) are passed to `ardm.networks.presets.build_network`, so one configuration serves every
dataset and every branching factor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of the full-resolution U-Net (see `ardm.networks.unet.ARDMNet`).

    Attributes:
        channels: width of the body (every ResBlock outputs this many channels).
        num_blocks: number of "down" ResBlocks; the "up" path has num_blocks + 1.
        attention_blocks: indices i in 0..num_blocks; self-attention follows down block i
            (when i < num_blocks) and up block i (blocks numbered in execution order).
        middle_attention: self-attention between the two middle ResBlocks.
        num_heads: attention heads; channels must be divisible by it.
        dropout: dropout rate inside every ResBlock, in [0, 1).
        groups: GroupNorm groups; channels must be divisible by it.
        class_embedding_dim: E, learned embedding width of each variable's value class.
        time_embedding_dim: width of the time-embedding MLP (the sinusoid has `channels` features).
        output_kernel: kernel size (1 or 3) of the output conv.
    """

    channels: int = 64
    num_blocks: int = 2
    attention_blocks: tuple[int, ...] = ()
    middle_attention: bool = True
    num_heads: int = 1
    dropout: float = 0.0
    groups: int = 16
    class_embedding_dim: int = 16
    time_embedding_dim: int = 256
    output_kernel: int = 3

    def __post_init__(self) -> None:
        # YAML and JSON give lists; the frozen dataclass must hold a hashable tuple.
        if isinstance(self.attention_blocks, list):
            object.__setattr__(self, "attention_blocks", tuple(self.attention_blocks))
        for name in ("channels", "num_blocks", "num_heads", "groups", "class_embedding_dim",
                     "time_embedding_dim", "output_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"NetworkConfig.{name} must be an int, got {value!r}")
        # The sinusoidal time embedding has `channels` features and needs at least one sin/cos pair.
        if self.channels < 2:
            raise ValueError(f"NetworkConfig.channels must be >= 2, got {self.channels}")
        for name in ("num_heads", "groups", "class_embedding_dim", "time_embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"NetworkConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_blocks < 0:
            raise ValueError(f"NetworkConfig.num_blocks must be >= 0, got {self.num_blocks}")
        if self.channels % self.groups != 0:
            raise ValueError(
                f"NetworkConfig.groups={self.groups} must divide channels={self.channels} (GroupNorm)"
            )
        if self.channels % self.num_heads != 0:
            raise ValueError(
                f"NetworkConfig.num_heads={self.num_heads} must divide channels={self.channels}"
            )
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool):
            raise ValueError(f"NetworkConfig.dropout must be a number, got {self.dropout!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"NetworkConfig.dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.middle_attention, bool):
            raise ValueError(
                f"NetworkConfig.middle_attention must be a bool, got {self.middle_attention!r}"
            )
        if self.output_kernel not in (1, 3):
            raise ValueError(f"NetworkConfig.output_kernel must be 1 or 3, got {self.output_kernel}")
        if not isinstance(self.attention_blocks, tuple):
            raise ValueError(
                f"NetworkConfig.attention_blocks must be a tuple of ints, got {self.attention_blocks!r}"
            )
        for index in self.attention_blocks:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= self.num_blocks:
                raise ValueError(
                    f"NetworkConfig.attention_blocks entries must be ints in 0..num_blocks="
                    f"{self.num_blocks}, got {index!r}"
                )
        if len(set(self.attention_blocks)) != len(self.attention_blocks):
            raise ValueError(
                f"NetworkConfig.attention_blocks has duplicates: {self.attention_blocks}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (attention_blocks as a list) for checkpoints and YAML."""
        d = dataclasses.asdict(self)
        d["attention_blocks"] = list(self.attention_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkConfig:
        """Inverse of `to_dict`; missing keys take the defaults, unknown keys raise ValueError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown NetworkConfig key(s) {unknown}; valid keys are {sorted(known)}"
            )
        return cls(**d)
