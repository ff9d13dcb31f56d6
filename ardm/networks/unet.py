"""Full-resolution U-Net of the ARDM paper's CIFAR-10 model, in plain PyTorch.

Layout (no down- or upsampling, every tensor in the body is (B, channels, H, W)):

    input conv                        -> skip 0
    down ResBlock i (+ attention)     -> skip i + 1          for i = 0..num_blocks-1
    middle: ResBlock, attention, ResBlock
    up ResBlock j on cat(h, skip)     (+ attention)          for j = 0..num_blocks (skips popped LIFO)
    head: GroupNorm, swish, conv to C * num_outputs channels (zero-initialised)

Every ResBlock gets the time embedding of the global step. The last layer of every residual
branch (ResBlock conv2, attention out-projection) and the head are zero-initialised, as in the
authors' code: the fresh network is the identity on its residual stream and predicts uniform
logits, which keeps the 65-block model stable at the start of training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ardm.networks.config import NetworkConfig
from ardm.networks.embeddings import InputEmbedding, TimeEmbedding

# GroupNorm epsilon of the authors' (flax) GroupNorm.
NORM_EPS = 1e-6


def _zero_init(module: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class ResBlock(nn.Module):
    """GroupNorm-swish-conv, + projected time embedding, GroupNorm-swish-dropout-conv, residual."""

    def __init__(
        self, in_channels: int, out_channels: int, temb_dim: int, groups: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero_init(nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1))
        # Up blocks take cat(h, skip) with twice the width: a 1x1 conv maps the shortcut down.
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, H, W); temb: (B, temb_dim), already swished -> (B, out_channels, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all H * W positions, on a GroupNorm'd input, residual."""

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels, eps=NORM_EPS)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj_out = _zero_init(nn.Conv2d(channels, channels, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels, H, W) -> (B, channels, H, W)."""
        batch, channels, height, width = x.shape
        head_dim = channels // self.num_heads
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.num_heads, head_dim, height * width)
        # Each of q, k, v: (B, heads, H * W, head_dim), the layout scaled_dot_product_attention takes.
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(batch, channels, height, width)
        return x + self.proj_out(h)


class ARDMNet(nn.Module):
    """ARDM network: (x, mask, stage, step) -> logits for every variable.

    Built by `ardm.networks.presets.build_network`; the data sizes are kept as attributes
    (shape, num_classes, num_stages, num_outputs, num_steps) next to `config`.
    """

    def __init__(
        self,
        config: NetworkConfig,
        shape: tuple[int, int, int],
        num_classes: int,
        num_stages: int,
        num_outputs: int,
        num_steps: int,
    ) -> None:
        """
        Args:
            config: architecture (validated by NetworkConfig itself).
            shape: (C, H, W) of the data.
            num_classes: K >= 2, data values are in 0..K-1.
            num_stages: S >= 1.
            num_outputs: logits per variable, >= 1.
            num_steps: S * D >= 1, total generation steps.
        """
        super().__init__()
        if len(shape) != 3 or any(int(n) < 1 for n in shape):
            raise ValueError(f"shape must be (C, H, W) of positive ints, got {shape!r}")
        for name, value, low in (
            ("num_classes", num_classes, 2),
            ("num_stages", num_stages, 1),
            ("num_outputs", num_outputs, 1),
            ("num_steps", num_steps, 1),
        ):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        self.config = config
        self.shape = tuple(int(n) for n in shape)
        self.num_classes = num_classes
        self.num_stages = num_stages
        self.num_outputs = num_outputs
        self.num_steps = num_steps

        in_channels = self.shape[0]
        ch = config.channels
        temb_dim = config.time_embedding_dim

        def res_block(in_ch: int) -> ResBlock:
            return ResBlock(in_ch, ch, temb_dim, config.groups, config.dropout)

        def attention() -> AttentionBlock:
            return AttentionBlock(ch, config.num_heads, config.groups)

        def maybe_attention(index: int) -> nn.Module:
            return attention() if index in config.attention_blocks else nn.Identity()

        self.time_embedding = TimeEmbedding(ch, temb_dim, num_steps)
        self.input_embedding = InputEmbedding(
            in_channels, num_classes, num_stages, config.class_embedding_dim, ch
        )
        self.down_blocks = nn.ModuleList([res_block(ch) for _ in range(config.num_blocks)])
        self.down_attention = nn.ModuleList([maybe_attention(i) for i in range(config.num_blocks)])
        self.mid_block1 = res_block(ch)
        self.mid_attention = attention() if config.middle_attention else nn.Identity()
        self.mid_block2 = res_block(ch)
        self.up_blocks = nn.ModuleList([res_block(2 * ch) for _ in range(config.num_blocks + 1)])
        self.up_attention = nn.ModuleList([maybe_attention(i) for i in range(config.num_blocks + 1)])
        self.out_norm = nn.GroupNorm(config.groups, ch, eps=NORM_EPS)
        self.out_conv = _zero_init(
            nn.Conv2d(
                ch,
                in_channels * num_outputs,
                kernel_size=config.output_kernel,
                padding=config.output_kernel // 2,
            )
        )

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, stage: torch.Tensor, step: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W) integer values in 0..K-1 (observed values, the rest at the stage's
                previous-resolution / absorbing value).
            mask: (B, C, H, W) bool or float, 1 = observed.
            stage: (B,) long stage in 0..S-1.
            step: (B,) long global step s * D + t in 0..S*D-1.

        Returns:
            (B, C, H, W, num_outputs) float32 logits; logits[b, c, i, j] is the categorical for
            variable (c, i, j). The head's output channel c * num_outputs + k is logit k of data
            channel c (channel-major grouping).
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, *{self.shape}), got {tuple(x.shape)}")
        if x.is_floating_point() or x.dtype == torch.bool:
            raise ValueError(f"x must hold integer class values, got dtype {x.dtype}")
        if mask.shape != x.shape:
            raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
        batch = x.shape[0]
        if stage.shape != (batch,) or step.shape != (batch,):
            raise ValueError(
                f"stage and step must have shape ({batch},), got {tuple(stage.shape)} and "
                f"{tuple(step.shape)}"
            )

        # The swish every ResBlock applies to the embedding before its projection, done once.
        temb = F.silu(self.time_embedding(step))
        h = self.input_embedding(x, mask, stage)
        skips = [h]
        for block, attn in zip(self.down_blocks, self.down_attention, strict=True):
            h = attn(block(h, temb))
            skips.append(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, temb)), temb)
        for block, attn in zip(self.up_blocks, self.up_attention, strict=True):
            h = attn(block(torch.cat([h, skips.pop()], dim=1), temb))
        out = self.out_conv(F.silu(self.out_norm(h)))  # (B, C * num_outputs, H, W)
        channels, height, width = self.shape
        out = out.reshape(batch, channels, self.num_outputs, height, width).permute(0, 1, 3, 4, 2)
        # float32 logits: a 256-way log-softmax in bf16 would lose the small probabilities.
        return out.float()
