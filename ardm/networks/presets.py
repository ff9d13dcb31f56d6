"""Named network presets and the network factory.

`NetworkConfig` (ardm.networks.config: the U-Net, for images) and `TransformerConfig`
(ardm.networks.transformer, for text) hold the architecture only; the data-dependent sizes
(shape, K, S, number of outputs, number of steps) are passed to `build_network`, so one preset
serves every dataset and every branching factor.
"""

from __future__ import annotations

from typing import Any

from ardm.networks.config import NetworkConfig
from ardm.networks.transformer import TransformerConfig, TransformerNet
from ardm.networks.unet import ARDMNet

# Any network's architecture; its to_dict form is what a ModelSpec stores (network_config_from_dict reads it).
ArchitectureConfig = NetworkConfig | TransformerConfig

PRESETS: dict[str, ArchitectureConfig] = {
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
    # The paper's text8 model (ARDM appendix, as D3PM's): a 12-layer bidirectional transformer,
    # width 768, 12 heads, MLP 3072, no dropout: 93.4M parameters (rotary positions: any length).
    "paper-text8": TransformerConfig(
        num_layers=12, width=768, num_heads=12, mlp_ratio=4, dropout=0.0, time_embedding_dim=768,
    ),
    # Text on a CPU: 0.47M parameters. configs/text.yaml (pydoc at length 64, 1500 steps of 64
    # sequences) reaches 2.73 bpc on the test split in under 7 minutes on one core.
    "cpu-text": TransformerConfig(
        num_layers=2, width=128, num_heads=4, mlp_ratio=4, dropout=0.0, time_embedding_dim=128,
    ),
}


def get_preset(name: str) -> ArchitectureConfig:
    """The named preset; ValueError listing the valid names for an unknown one."""
    if name not in PRESETS:
        raise ValueError(f"unknown network preset {name!r}; valid presets: {sorted(PRESETS)}")
    return PRESETS[name]


def network_config_from_dict(d: dict[str, Any]) -> ArchitectureConfig:
    """The architecture of a ModelSpec's network dict: a TransformerConfig when it says
    "architecture": "transformer", else the U-Net's NetworkConfig (whose dicts never name one)."""
    if d.get("architecture") == TransformerConfig.ARCHITECTURE:
        return TransformerConfig.from_dict(d)
    return NetworkConfig.from_dict(d)


def build_network(
    config: ArchitectureConfig,
    shape: tuple[int, int, int],
    num_classes: int,
    num_stages: int,
    num_outputs: int,
    num_steps: int,
) -> ARDMNet | TransformerNet:
    """Builds the ARDM network.

    Args:
        config: architecture: a NetworkConfig builds the U-Net, a TransformerConfig the transformer.
        shape: (C, H, W) of the data.
        num_classes: K, data values are in 0..K-1.
        num_stages: S >= 1 (1 for the order-agnostic ARDM).
        num_outputs: logits per variable (K for the data parameterization, b for the direct one).
        num_steps: S * D, total generation steps (the step input ranges over 0..num_steps-1).

    Returns:
        A network mapping (x, mask, stage, step) to (B, C, H, W, num_outputs) float32 logits.
    """
    network = TransformerNet if isinstance(config, TransformerConfig) else ARDMNet
    return network(config, shape, num_classes, num_stages, num_outputs, num_steps)
