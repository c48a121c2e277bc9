"""Fixtures for the command-line tests: a tiny random-weight DINOv2 checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    """A 4-layer, 2-head, 32-wide DINOv2 with 14-pixel patches and random weights, saved as a checkpoint."""
    transformers = pytest.importorskip("transformers")
    import torch

    path = tmp_path_factory.mktemp("tiny-dinov2")
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=84,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.Dinov2Model(config)
    model.save_pretrained(path)
    return path
