"""Bidirectional transformer for text ARDMs (the paper's text8 model), in plain PyTorch.

Input tokens replace the U-Net's mask channel with an absorbing [MASK] class: an observed variable
is its value x in 0..K-1; an unobserved one is the token K + x^(j), its value at the stage's coarser
level. For the order-agnostic ARDM (S = 1) that is always x^(0) = 0, i.e. the single [MASK] token K,
so the vocabulary is K + 1; with S > 1 stages (branching b < K) the coarse value carries information,
and the vocabulary is 2K.

Layout: token embedding; num_layers pre-LayerNorm blocks (full self-attention over the D positions,
then a GELU MLP), each adding a projection of the time embedding of the global step to its input; a
final LayerNorm and a linear head to num_outputs logits. Positions enter through rotary embeddings of
the queries and keys (RoFormer), so attention depends on relative position from the start: with a
learned absolute position embedding instead, cpu-text stayed at the letter frequencies' entropy
(about 4.1 bits per character on pydoc) for over 1500 steps.
The last layer of every residual branch and the head are zero-initialised, as in the U-Net: the fresh
network predicts uniform logits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ardm.networks.embeddings import TimeEmbedding

# Standard deviation of the token embeddings at initialisation (as in GPT-2).
EMBEDDING_STD = 0.02


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture of the text transformer (see the module docstring).

    Attributes:
        num_layers: transformer blocks.
        width: model width (embedding and residual stream).
        num_heads: attention heads; width must be divisible by it.
        mlp_ratio: hidden width of each block's MLP, as a multiple of width.
        dropout: dropout rate after attention and inside the MLP, in [0, 1).
        time_embedding_dim: width of the time-embedding MLP (the sinusoid has `width` features).
    """

    ARCHITECTURE: ClassVar[str] = "transformer"

    num_layers: int = 2
    width: int = 128
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    time_embedding_dim: int = 128

    def __post_init__(self) -> None:
        for name in ("num_layers", "width", "num_heads", "mlp_ratio", "time_embedding_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be an int >= 1, got {value!r}")
        if self.width < 2:  # the sinusoidal time embedding needs one sin/cos pair
            raise ValueError(f"TransformerConfig.width must be >= 2, got {self.width}")
        if self.width % self.num_heads or (self.width // self.num_heads) % 2:
            raise ValueError(f"TransformerConfig.num_heads={self.num_heads} must divide width={self.width} into "
                             "heads of an even width (rotary embeddings turn pairs of features)")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ValueError(f"TransformerConfig.dropout must be a number in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and YAML; "architecture" tells it from a U-Net's NetworkConfig."""
        return {"architecture": self.ARCHITECTURE, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TransformerConfig:
        """Inverse of `to_dict`; missing keys take the defaults, unknown keys raise ValueError."""
        d = dict(d)
        if d.pop("architecture", cls.ARCHITECTURE) != cls.ARCHITECTURE:
            raise ValueError(f"not a {cls.ARCHITECTURE} configuration: {d}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TransformerConfig key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**d)


def _zero_init(module: nn.Linear) -> nn.Linear:
    nn.init.zeros_(module.weight)
    nn.init.zeros_(module.bias)
    return module


def rotary_tables(length: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (length, head_dim // 2) float32: the rotary angles p * 10000^(-2i / head_dim) of
    position p and pair i (Su et al., RoFormer)."""
    freqs = 10000.0 ** (-torch.arange(head_dim // 2, dtype=torch.float32) * 2 / head_dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * freqs[None]
    return torch.cos(angles), torch.sin(angles)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of queries or keys x (B, heads, D, head_dim): each pair of features
    (first half, second half) is turned by its position's angle, so q . k depends on relative position."""
    first, second = x.float().chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1).to(x.dtype)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: h + attention(LN(h)), then h + MLP(LN(h)); bidirectional (no causal mask)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        width, self.num_heads = config.width, config.num_heads
        self.temb_proj = nn.Linear(config.time_embedding_dim, width)
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = _zero_init(nn.Linear(width, width))
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, config.mlp_ratio * width), nn.GELU(), nn.Dropout(config.dropout),
            _zero_init(nn.Linear(config.mlp_ratio * width, width)),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, h: torch.Tensor, temb: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """h: (B, D, width); temb: (B, time_embedding_dim), already swished; cos, sin: rotary_tables(D,
        head_dim) -> (B, D, width)."""
        h = h + self.temb_proj(temb)[:, None]
        batch, length, width = h.shape
        qkv = self.qkv(self.norm1(h)).view(batch, length, 3, self.num_heads, width // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, D, head_dim)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, width)
        h = h + self.dropout(self.attn_out(attended))
        return h + self.mlp(self.norm2(h))


class TransformerNet(nn.Module):
    """ARDM network over D = C*H*W variables in flat CHW order: (x, mask, stage, step) -> logits.

    Built by `ardm.networks.presets.build_network` with the same arguments as the U-Net, whose
    interface it shares; the stage is known from the global step and from the [MASK] tokens.
    """

    def __init__(
        self,
        config: TransformerConfig,
        shape: tuple[int, int, int],
        num_classes: int,
        num_stages: int,
        num_outputs: int,
        num_steps: int,
    ) -> None:
        """
        Args:
            config: architecture (validated by TransformerConfig itself).
            shape: (C, H, W) of the data; text is (1, 1, L).
            num_classes: K >= 2, data values are in 0..K-1.
            num_stages: S >= 1.
            num_outputs: logits per variable, >= 1.
            num_steps: S * D >= 1, total generation steps.
        """
        super().__init__()
        if len(shape) != 3 or any(int(n) < 1 for n in shape):
            raise ValueError(f"shape must be (C, H, W) of positive ints, got {shape!r}")
        for name, value, low in (("num_classes", num_classes, 2), ("num_stages", num_stages, 1),
                                 ("num_outputs", num_outputs, 1), ("num_steps", num_steps, 1)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self.config = config
        self.shape = tuple(int(n) for n in shape)
        self.num_classes, self.num_stages, self.num_outputs = num_classes, num_stages, num_outputs
        num_variables = self.shape[0] * self.shape[1] * self.shape[2]
        vocabulary = num_classes + (num_classes if num_stages > 1 else 1)
        self.token_embedding = nn.Embedding(vocabulary, config.width)
        nn.init.normal_(self.token_embedding.weight, std=EMBEDDING_STD)
        # Fixed tables, rebuilt from the sizes: not weights, so not in the state dict.
        cos, sin = rotary_tables(num_variables, config.width // config.num_heads)
        self.register_buffer("rotary_cos", cos, persistent=False)
        self.register_buffer("rotary_sin", sin, persistent=False)
        self.time_embedding = TimeEmbedding(config.width, config.time_embedding_dim, num_steps)
        self.blocks = nn.ModuleList([TransformerBlock(config) for _ in range(config.num_layers)])
        self.out_norm = nn.LayerNorm(config.width)
        self.head = _zero_init(nn.Linear(config.width, num_outputs))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, stage: torch.Tensor, step: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W) integer values in 0..K-1 (observed values, the rest at the stage's coarse value).
            mask: (B, C, H, W) bool, True = observed.
            stage: (B,) long stage in 0..S-1 (unused: the step and the tokens carry it).
            step: (B,) long global step s * D + t in 0..S*D-1.

        Returns:
            (B, C, H, W, num_outputs) float32 logits, one categorical per variable.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, *{self.shape}), got {tuple(x.shape)}")
        if mask.shape != x.shape:
            raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
        batch = x.shape[0]
        tokens = torch.where(mask.bool(), x, x + self.num_classes).flatten(1)  # (B, D)
        h = self.token_embedding(tokens)
        temb = F.silu(self.time_embedding(step))
        for block in self.blocks:
            h = block(h, temb, self.rotary_cos, self.rotary_sin)
        logits = self.head(self.out_norm(h))  # (B, D, num_outputs)
        # float32 logits, as the U-Net's: a log-softmax in bf16 would lose the small probabilities.
        return logits.view(batch, *self.shape, self.num_outputs).float()
