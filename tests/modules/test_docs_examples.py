"""The code examples of docs/modules.md, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "modules.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_rwncut_example_runs():
    scope: dict = {}
    exec(_blocks()[0], scope)
    assert scope["labels"].shape == (2, 128, 128)
    assert scope["finer"].shape == (2, 256)


def test_capture_example_runs_on_tiny_unet():
    pytest.importorskip("diffusers")
    from diffcut_gpu.models.diffusion import DiffusionBackbone, load_config

    scope: dict = {}
    exec(_blocks()[1], scope)
    dim = load_config("unet_tiny")["cross_attention_dim"]
    unet = DiffusionBackbone.from_config("unet_tiny", prompt_embeds=torch.zeros(1, 8, dim)).unet
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, unet.config.in_channels, 32, 32, generator=g)
    labels = scope["segment_with_my_unet"](unet, latents, torch.tensor([50, 50]), torch.randn(2, 8, dim, generator=g))
    assert labels.shape == (2, 32, 32) and labels.dtype == torch.long
