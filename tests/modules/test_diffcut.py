"""DiffCut module: backbone output -> pixel labels, with a stand-in backbone (no weights needed)."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import DiffCut
from diffcut_gpu.models.output import BackboneOutput


class TwoRegionBackbone(torch.nn.Module):
    """Attention/features that separate the left and right halves of an 8x8 token grid."""

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        b = images.shape[0]
        h = w = 8
        right = (torch.arange(h * w) % w >= w // 2).float()
        feats = torch.stack([right, 1 - right], -1) + 0.05 * torch.sin(torch.arange(h * w * 2.0)).view(h * w, 2)
        feats = feats.unsqueeze(0).expand(b, -1, -1).contiguous()
        f = torch.nn.functional.normalize(feats, dim=-1)
        attention = torch.softmax(8 * f @ f.transpose(-1, -2), -1)
        return BackboneOutput(attention=attention, features=feats, grid=(h, w))


@pytest.mark.parametrize("source", ["attention", "features", "both"])
@pytest.mark.parametrize("upsample", ["nearest", "concept"])
def test_labels_at_input_size(source, upsample):
    model = DiffCut(TwoRegionBackbone(), source=source, upsample=upsample, threshold=0.5, min_size=2)
    out = model(torch.rand(2, 3, 32, 48))
    assert out.labels.shape == (2, 32, 48) and out.token_labels.shape == (2, 8, 8)
    for b in range(2):
        left, right = out.labels[b, :, :16], out.labels[b, :, 32:]
        assert left.unique().numel() == 1 and right.unique().numel() == 1 and left[0, 0] != right[0, 0]


def test_refine_runs():
    model = DiffCut(TwoRegionBackbone(), threshold=0.5, min_size=2, refine=True)
    assert model(torch.rand(1, 3, 16, 16)).labels.shape == (1, 16, 16)


def test_exception():
    with pytest.raises(ValueError, match="source"):
        DiffCut(TwoRegionBackbone(), source="pixels")
    with pytest.raises(ValueError, match="images"):
        DiffCut(TwoRegionBackbone())(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="backbone"):
        DiffCut.from_pretrained("x", backbone="resnet")
