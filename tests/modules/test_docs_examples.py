"""The code examples of docs/modules.md, run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "modules.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def _block(marker: str) -> str:
    """The one example of docs/modules.md that contains ``marker``."""
    found = [b for b in _blocks() if marker in b]
    assert len(found) == 1, f"expected one python block with {marker!r} in {DOC}, got {len(found)}"
    return found[0]


def test_rwncut_example_runs():
    scope: dict = {}
    exec(_block("finer = tree.labels_at"), scope)
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
    exec(_block("def segment_with_my_unet"), scope)
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


def test_hf_attentions_example_runs_on_tiny_vit():
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                       intermediate_size=64, patch_size=14, image_size=56,
                                       attn_implementation="eager")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vit = transformers.Dinov2Model(config).eval()
    scope: dict = {"vit": vit, "pixels": torch.rand(2, 3, 56, 56), "h": 4, "w": 4}
    with torch.no_grad():
        exec(_block("hf_attention_to_transition(out.attentions"), scope)
    assert scope["P"].shape == (2, 16, 16) and scope["labels"].shape == (2, 4, 4)
