"""ARDM networks: the full-resolution U-Net (images), the bidirectional transformer (text), their
embeddings, configs and presets."""

from ardm.networks.config import NetworkConfig
from ardm.networks.embeddings import InputEmbedding, TimeEmbedding, sinusoidal_embedding
from ardm.networks.presets import (
    PRESETS,
    ArchitectureConfig,
    build_network,
    get_preset,
    network_config_from_dict,
)
from ardm.networks.transformer import TransformerConfig, TransformerNet
from ardm.networks.unet import ARDMNet, AttentionBlock, ResBlock

__all__ = [
    "ARDMNet",
    "ArchitectureConfig",
    "AttentionBlock",
    "InputEmbedding",
    "NetworkConfig",
    "PRESETS",
    "ResBlock",
    "TimeEmbedding",
    "TransformerConfig",
    "TransformerNet",
    "build_network",
    "get_preset",
    "network_config_from_dict",
    "sinusoidal_embedding",
]
