"""Named network presets and the network factory.

The presets are `NetworkConfig`s (see `ardm.networks.config`); the data-dependent sizes are passed
to `build_network`, so one preset serves every dataset and every branching factor.
"""

from __future__ import annotations

from ardm.networks.config import NetworkConfig
from ardm.networks.unet import ARDMNet

PRESETS: dict[str, NetworkConfig] = {
    # The paper's CIFAR-10 model (ARDM appendix; authors' images config): one 32x32 resolution,
    # 256 channels, 32 ResBlocks down and 33 up with skip concatenation, ResBlock-attention-ResBlock
    # in the middle, 1 head, no dropout, 32 GroupNorm groups, a 1024-wide time MLP, a quarter of
    # the width (64) for the class embedding, a 3x3 output conv. Note: the authors' released
    # config lists 32 among its attention resolutions, which at a single resolution would add
    # attention after every block (attention_blocks = all indices); the paper describes only the
    # middle attention, which is what this preset follows.
    "paper-cifar10": NetworkConfig(
        channels=256,
        num_blocks=32,
        attention_blocks=(),
        middle_attention=True,
        num_heads=1,
        dropout=0.0,
        groups=32,
        class_embedding_dim=64,
        time_embedding_dim=1024,
        output_kernel=3,
    ),
    # Smoke tests and demos: trains in seconds on 8x8 images on a CPU.
    "cpu-tiny": NetworkConfig(
        channels=32,
        num_blocks=1,
        attention_blocks=(),
        middle_attention=True,
        num_heads=1,
        dropout=0.0,
        groups=8,
        class_embedding_dim=8,
        time_embedding_dim=128,
        output_kernel=1,
    ),
    # Small CPU experiments: one training step at batch 64 on 3x8x8 stays well under 0.3 s on
    # 2 cores; the middle attention gives every pixel a global receptive field.
    "cpu-small": NetworkConfig(
        channels=64,
        num_blocks=2,
        attention_blocks=(),
        middle_attention=True,
        num_heads=2,
        dropout=0.0,
        groups=16,
        class_embedding_dim=16,
        time_embedding_dim=256,
        output_kernel=1,
    ),
}


def get_preset(name: str) -> NetworkConfig:
    """The named preset; ValueError listing the valid names for an unknown one."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; valid presets: {sorted(PRESETS)}")
    return PRESETS[name]


def build_network(
    config: NetworkConfig,
    shape: tuple[int, int, int],
    num_classes: int,
    num_stages: int,
    num_outputs: int,
    num_steps: int,
) -> ARDMNet:
    """Builds the ARDM network.

    Args:
        config: architecture.
        shape: (C, H, W) of the data.
        num_classes: K, data values are in 0..K-1.
        num_stages: S >= 1 (1 for the order-agnostic ARDM).
        num_outputs: logits per variable (K for the data parameterization, b for the direct one).
        num_steps: S * D, total generation steps (the step input ranges over 0..num_steps-1).

    Returns:
        An `ARDMNet` mapping (x, mask, stage, step) to (B, C, H, W, num_outputs) float32 logits.
    """
    return ARDMNet(config, shape, num_classes, num_stages, num_outputs, num_steps)
