"""Embeddings of the network inputs: the generation step and the per-pixel input features.

Shapes use B = batch, C = data channels, H x W = image size, K = number of value classes,
S = number of stages (Upscale ARDM; S = 1 is the order-agnostic ARDM).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Sinusoids are laid out for steps in [0, TIME_SCALE), whatever the real number of steps is,
# so that the frequency range suits CIFAR-10 (3072 or 12288 steps) and 8x8 toys alike. The
# authors' code rescales t by 1000 / max_time in the same way.
TIME_SCALE = 1000.0


def sinusoidal_embedding(step: torch.Tensor, dim: int, num_steps: int) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of a (global) generation step.

    Args:
        step: (B,) integer or float steps in [0, num_steps).
        dim: number of output features (>= 2); an odd dim gets one zero feature at the end.
        num_steps: total number of steps; steps are rescaled to [0, TIME_SCALE).

    Returns:
        (B, dim) float32 tensor: [sin(t * f_0..f_{h-1}), cos(t * f_0..f_{h-1})] with h = dim // 2
        frequencies f_i = 10000^(-i / (h - 1)) spaced geometrically from 1 down to 1e-4.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a sinusoidal embedding, got {dim}")
    half = dim // 2
    # float32 even under autocast: bf16 cannot resolve neighbouring steps near 1000.
    t = step.to(torch.float32) * (TIME_SCALE / num_steps)
    exponent = torch.arange(half, device=step.device, dtype=torch.float32) / max(half - 1, 1)
    freqs = torch.exp(-math.log(10000.0) * exponent)
    angles = t[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the global step followed by a 2-layer swish MLP.

    The global step s * D + t also identifies the stage, so one embedding serves both.
    """

    def __init__(self, sinusoid_dim: int, embedding_dim: int, num_steps: int) -> None:
        """
        Args:
            sinusoid_dim: number of sinusoidal features fed to the MLP.
            embedding_dim: width of both MLP layers, i.e. of the returned embedding.
            num_steps: total number of generation steps S * D (sets the step rescaling).
        """
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.num_steps = num_steps
        self.dense0 = nn.Linear(sinusoid_dim, embedding_dim)
        self.dense1 = nn.Linear(embedding_dim, embedding_dim)

    def forward(self, step: torch.Tensor) -> torch.Tensor:
        """(B,) steps -> (B, embedding_dim) embedding."""
        emb = sinusoidal_embedding(step, self.sinusoid_dim, self.num_steps)
        return self.dense1(F.silu(self.dense0(emb.to(self.dense0.weight.dtype))))


class InputEmbedding(nn.Module):
    """Builds the per-pixel input features and maps them to the body's width with a 3x3 conv.

    Features, concatenated along channels in this order:
      - the value-scaled data x * 2 / K - 1 (C channels): ordinal information,
      - the mask (C channels, 1 = observed),
      - a one-hot of the stage broadcast over the image (S channels, omitted when S == 1),
      - a learned embedding of each variable's value class (C * E channels): lets the network
        treat values categorically (the absorbing value, digit boundaries) and not only as a scalar.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_stages: int,
        class_embedding_dim: int,
        out_channels: int,
    ) -> None:
        """
        Args:
            in_channels: C, data channels.
            num_classes: K, values are in 0..K-1.
            num_stages: S >= 1.
            class_embedding_dim: E, embedding width per variable.
            out_channels: width of the returned feature map.
        """
        super().__init__()
        self.num_classes = num_classes
        self.num_stages = num_stages
        # One table shared by the C channels: the conv below has separate weights per channel
        # slot, so sharing loses nothing and keeps the table small (the authors share it too).
        self.class_embedding = nn.Embedding(num_classes, class_embedding_dim)
        stage_channels = num_stages if num_stages > 1 else 0
        num_features = 2 * in_channels + stage_channels + in_channels * class_embedding_dim
        self.conv = nn.Conv2d(num_features, out_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, stage: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W) long values in 0..K-1.
            mask: (B, C, H, W) bool or float, 1 = observed.
            stage: (B,) long stages in 0..S-1.

        Returns:
            (B, out_channels, H, W) features.
        """
        batch, _, height, width = x.shape
        # Build the features in the parameters' dtype so a model cast to bf16 still works.
        dtype = self.class_embedding.weight.dtype
        features = [x.to(dtype) * (2.0 / self.num_classes) - 1.0, mask.to(dtype)]
        if self.num_stages > 1:
            onehot = F.one_hot(stage, self.num_stages).to(dtype)
            features.append(onehot[:, :, None, None].expand(batch, self.num_stages, height, width))
        emb = self.class_embedding(x)  # (B, C, H, W, E)
        features.append(emb.permute(0, 1, 4, 2, 3).reshape(batch, -1, height, width))
        return self.conv(torch.cat(features, dim=1))
