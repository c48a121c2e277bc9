"""RWNCut: the drop-in module from attention or features to labels."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import RWNCut, power_walk, recursive_ncut, reversibilize
from tests.conftest import attention_like, planted_attention


def _grid_attention(b: int = 2, h: int = 6, w: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Walk on an h x w grid whose left and right halves are two planted blocks."""
    n = h * w
    truth = (torch.arange(n) % w >= w // 2).long()
    P, _ = planted_attention(b, [n], seed=seed)  # base noise
    same = (truth[:, None] == truth[None, :]).double()
    P = P * (same + 0.01)
    return (P / P.sum(-1, keepdim=True)).float(), truth


def test_smoke_token_and_pixel_labels():
    P, truth = _grid_attention()
    cut = RWNCut(threshold=0.5, min_size=2)
    tokens = cut(P, grid=(6, 6))
    assert tokens.shape == (2, 6, 6) and tokens.dtype == torch.long
    pixels = cut(P, grid=(6, 6), output_size=(24, 36))
    assert pixels.shape == (2, 24, 36)
    assert cut.last_output.segmentation.labels.shape == (2, 36)
    for b in range(2):
        labels = tokens[b].reshape(-1)
        assert len(set(zip(labels.tolist(), truth.tolist()))) == 2


def test_heads_are_averaged():
    heads = torch.stack([attention_like(2, 16, seed=s, dtype=torch.float32) for s in range(4)], dim=1)
    cut = RWNCut(threshold="dynamic", min_size=2)
    assert torch.equal(cut(heads, grid=(4, 4)), cut(heads.mean(1), grid=(4, 4)))


def test_matches_functional_pipeline():
    P = attention_like(2, 36, seed=3, temperature=6.0)
    cut = RWNCut(power=2, threshold=0.4, min_size=2)
    ref = recursive_ncut(reversibilize(power_walk(P, 2)), threshold=0.4, min_size=2)
    assert torch.equal(cut(P, grid=(6, 6)).reshape(2, -1), ref.labels)


def test_features_source():
    g = torch.Generator().manual_seed(0)
    truth = (torch.arange(36) % 6 >= 3).long()
    F = torch.randn(2, 16, generator=g)[truth] + 0.05 * torch.randn(36, 16, generator=g)
    cut = RWNCut(source="features", threshold=0.5, min_size=2, upsample="concept")
    labels = cut(F.unsqueeze(0), grid=(6, 6), output_size=(12, 12))
    assert labels.shape == (1, 12, 12)
    tokens = cut.last_output.token_labels[0].reshape(-1)
    assert len(set(zip(tokens.tolist(), truth.tolist()))) == 2


@pytest.mark.parametrize("graph", ["reversible", "symmetric", "rows"])
def test_graph_kinds(graph):
    P = attention_like(1, 25, seed=4, temperature=6.0, dtype=torch.float32)
    out = RWNCut(graph=graph, threshold="dynamic", min_size=2).segment(P, grid=(5, 5))
    assert out.graph.shape == (1, 25, 25)
    assert torch.allclose(out.graph, out.graph.transpose(-1, -2))


def test_deterministic_and_no_grad():
    P = attention_like(2, 49, seed=5, temperature=6.0, dtype=torch.float32).requires_grad_()
    cut = RWNCut(threshold="dynamic")
    a = cut(P, grid=(7, 7))
    b = cut(P, grid=(7, 7))
    assert torch.equal(a, b) and not a.requires_grad


def test_module_composes_in_sequential_pipeline():
    class Head(torch.nn.Module):
        def forward(self, x):
            return torch.softmax(x @ x.transpose(-1, -2), -1)

    model = torch.nn.Sequential(Head())
    cut = RWNCut(threshold=0.5)
    x = torch.randn(1, 16, 4, generator=torch.Generator().manual_seed(0))
    assert cut(model(x), grid=(4, 4)).shape == (1, 4, 4)
    assert "threshold=0.5" in repr(cut)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "pixels"}, "source"),
        ({"graph": "dense"}, "graph"),
        ({"power": 0}, "power"),
        ({"upsample": "bicubic"}, "upsample"),
    ],
)
def test_exception_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RWNCut(**kwargs)


def test_exception_inputs():
    cut = RWNCut()
    P = attention_like(1, 16, dtype=torch.float32)
    with pytest.raises(ValueError, match="grid"):
        cut(P, grid=(3, 5))
    with pytest.raises(ValueError, match="x:"):
        cut(torch.rand(16), grid=(4, 4))
    with pytest.raises(ValueError, match="finite"):
        cut(torch.full((1, 4, 4), float("nan")), grid=(2, 2))
