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
    out, tree = scope["cut"].last_output, scope["tree"]
    # The hierarchy re-cut at each image's own threshold gives the labels the module returned.
    assert torch.equal(tree.labels_at(tree.thresholds).view(2, 16, 16), out.token_labels)
    for b in range(2):
        assert set(scope["labels"][b].unique().tolist()) <= set(out.token_labels[b].unique().tolist())


def test_capture_example_runs_on_tiny_unet():
    pytest.importorskip("diffusers")
    from diffcut_gpu.models.diffusion import DiffusionBackbone, load_config

    scope: dict = {}
    exec(_blocks()[1], scope)
    dim = load_config("unet_tiny")["cross_attention_dim"]
    unet = DiffusionBackbone.from_config("unet_tiny", prompt_embeds=torch.zeros(1, 8, dim)).unet
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, unet.config.in_channels, 32, 32, generator=g)
    prompt = torch.randn(2, 8, dim, generator=g)
    labels = scope["segment_with_my_unet"](unet, latents, torch.tensor([50, 50]), prompt)
    assert labels.shape == (2, 32, 32) and labels.dtype == torch.long
    # Each image is captured and cut on its own: alone, the second image gets the labels it got in the batch.
    one = scope["segment_with_my_unet"](unet, latents[1:], torch.tensor([50]), prompt[1:])
    assert torch.equal(one[0], labels[1])
