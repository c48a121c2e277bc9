"""RWNCut and DiffCut inside other people's models: under ``torch.autocast`` and ``torch.compile``."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import DiffCut, RWNCut
from diffcut_gpu.models.output import BackboneOutput
from tests.conftest import attention_like


class _MatmulBackbone(torch.nn.Module):
    """Attention and features from a linear layer and a softmax: autocast runs them in bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(8) * 3)
            self.proj.bias.zero_()

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        tokens = torch.nn.functional.avg_pool2d(images, 4).flatten(2).transpose(1, 2)  # (B, 64, 3)
        feats = torch.cat([tokens, 1 - tokens, tokens[..., :2] * 0.5], -1)  # (B, 64, 8)
        q = self.proj(feats)
        attention = torch.softmax(q @ q.transpose(-1, -2), -1)
        return BackboneOutput(attention=attention, features=feats, grid=(8, 8))


def _images() -> torch.Tensor:
    images = torch.zeros(2, 3, 32, 32)
    images[:, :, :, 16:] = 1.0  # two halves
    return images + 0.05 * torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_rwncut_under_bf16_autocast_matches_float32():
    P = attention_like(2, 64, seed=1, temperature=6.0, dtype=torch.float32)
    cut = RWNCut(threshold=0.5, power=2, min_size=2)
    ref = cut(P, grid=(8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cut(P, grid=(8, 8))  # the power walk's bmm would run in bf16 and fail the row-sum check
    assert torch.equal(out, ref)
    assert cut.last_output.graph.dtype == torch.float32


@pytest.mark.parametrize("source", ["attention", "features"])
def test_diffcut_under_bf16_autocast(source):
    model = DiffCut(_MatmulBackbone(), source=source, threshold=0.5, min_size=2, upsample="nearest")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.backbone(_images()).attention.dtype == torch.bfloat16  # the model really is in bf16
        out = model(_images())
    assert out.labels.shape == (2, 32, 32)
    for b in range(2):  # the two halves are found, as without autocast
        left, right = out.labels[b, :, :12], out.labels[b, :, 20:]
        assert left.unique().numel() == 1 and right.unique().numel() == 1 and left[0, 0] != right[0, 0]


def test_inside_compiled_model_one_graph_break_no_recompiles():
    """The solver is one ``torch.compiler.disable`` graph break; new inputs of the same shape reuse the
    compiled graph (no recompilation), and the labels match eager."""
    from torch._dynamo.utils import counters

    model = DiffCut(_MatmulBackbone(), threshold=0.5, min_size=2, upsample="nearest")
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model, backend="eager")
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        images = _images() + 0.05 * torch.rand(2, 3, 32, 32, generator=g)
        assert torch.equal(compiled(images).labels, model(images).labels)
    assert counters["stats"]["unique_graphs"] <= 2  # the backbone before the break (and what follows)
    assert sum(counters["recompiles"].values()) == 0 if "recompiles" in counters else True
    breaks = [reason for reason in counters["graph_break"] if "torch.compiler.disable" in reason]
    assert breaks and all("segment" in reason for reason in breaks)
