"""ARDM networks: the full-resolution U-Net, its input/time embeddings, configs and presets."""

from ardm.networks.config import NetworkConfig
from ardm.networks.embeddings import InputEmbedding, TimeEmbedding, sinusoidal_embedding
from ardm.networks.presets import PRESETS, build_network, get_preset
from ardm.networks.unet import ARDMNet, AttentionBlock, ResBlock

__all__ = [
    "ARDMNet",
    "AttentionBlock",
    "InputEmbedding",
    "NetworkConfig",
    "PRESETS",
    "ResBlock",
    "TimeEmbedding",
    "build_network",
    "get_preset",
    "sinusoidal_embedding",
]
