"""Backbones that turn images into a token transition matrix, token features and the token grid."""

from .diffusion import DiffusionBackbone, available_configs, load_config
from .output import BackboneOutput
from .vit import IMAGENET_MEAN, IMAGENET_STD, ViTBackbone, target_size

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BackboneOutput",
    "DiffusionBackbone",
    "ViTBackbone",
    "available_configs",
    "load_config",
    "target_size",
]
