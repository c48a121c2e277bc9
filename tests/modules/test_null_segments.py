"""DiffCut end to end with the null-model default: structureless images give one segment, an object on a
plain background two; ``segments=K`` gives K; re-cut to pixels without the backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from diffcut_gpu import DiffCut
from tests.conftest import DINOV2

DINOV2 = Path(os.environ.get("DIFFCUT_DINOV2", DINOV2))
needs_dinov2 = pytest.mark.skipif(not (DINOV2 / "config.json").is_file(), reason=f"no weights at {DINOV2}")


def _image(kind: str, size: int = 224, seed: int = 1) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: constants, noise (seed differs from the calibration's), or objects."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((3, size, size), 0.5)
    if kind == "black":
        x.zero_()
    elif kind == "white":
        x.fill_(1.0)
    elif kind == "red":
        x[:] = torch.tensor([0.8, 0.2, 0.1]).view(3, 1, 1)
    elif kind == "noise":
        x = torch.rand(3, size, size, generator=g)
    elif kind == "gauss":
        x = (0.5 + 0.2 * torch.randn(3, size, size, generator=g)).clamp(0, 1)
    elif kind in ("object", "two"):
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        x[:] = torch.tensor([0.8, 0.8, 0.75]).view(3, 1, 1)
        if kind == "object":
            x[:, (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2] = torch.tensor([0.8, 0.2, 0.1])[:, None]
        else:
            for cx, color in ((size / 4, [0.8, 0.2, 0.1]), (3 * size / 4, [0.1, 0.3, 0.8])):
                x[:, (yy - size / 2) ** 2 + (xx - cx) ** 2 < (size / 7) ** 2] = torch.tensor(color)[:, None]
    return x.unsqueeze(0)


@pytest.fixture(scope="module")
def vit_model():
    return DiffCut.from_pretrained(DINOV2, backbone="vit", backbone_kwargs={"resolution": (224, 224)})


@needs_dinov2
def test_vit_structureless_one_segment(vit_model):
    images = torch.cat([_image(k) for k in ("grey", "black", "white", "red", "noise", "gauss")])
    out = vit_model(images)
    assert out.segmentation.num_segments.tolist() == [1] * 6
    assert (out.labels == 0).all()


@needs_dinov2
def test_vit_object_on_plain_background_two_segments(vit_model):
    out = vit_model(_image("object"))
    assert out.segmentation.num_segments.tolist() == [2]
    yy, xx = torch.meshgrid(torch.arange(224), torch.arange(224), indexing="ij")
    inside = (yy - 112) ** 2 + (xx - 112) ** 2 < 40**2  # well inside the disk of radius 56
    outside = (yy - 112) ** 2 + (xx - 112) ** 2 > 72**2
    lab = out.labels[0]
    assert torch.unique(lab[inside]).numel() == 1 and torch.unique(lab[outside]).numel() == 1
    assert lab[inside][0] != lab[outside][0]


@needs_dinov2
def test_vit_segments_k_and_recut(vit_model):
    model = DiffCut(vit_model.backbone, segments=5)
    out = model(_image("two"))
    assert out.segmentation.num_segments.tolist() == [5] and out.labels.amax().item() == 4
    for k in (1, 2, 3, 7):
        pixels = out.labels_for_count(k)
        assert pixels.shape == (1, 224, 224) and int(pixels.amax()) + 1 == k
    assert torch.equal(out.labels_for_count(5), out.labels)
    assert out.labels_at(0.0).amax().item() == 0


def test_tiny_diffusion_structureless_one_segment():
    pytest.importorskip("diffusers")
    from tests.models.test_diffusion import _backbone

    model = DiffCut(_backbone("unet_tiny"))
    images = torch.cat([_image(k, size=64) for k in ("grey", "black", "red", "noise", "gauss")])
    out = model(images)
    assert out.segmentation.num_segments.tolist() == [1] * 5
    assert model.null_bound((64, 64), images.device, images.dtype) < 1
    # the graphs do have splits below the fully mixed walk's NCut 1: the "null" rule cuts every image
    null_rule = DiffCut(model.backbone, threshold="null")(images)
    assert int(null_rule.segmentation.num_segments.min()) > 1
