"""RWNCut: the drop-in module from attention or features to labels."""

from __future__ import annotations

import inspect
import io
import math

import pytest
import torch

from diffcut_gpu import CutConfig, DiffCut, RWNCut, power_walk, recursive_ncut, reversibilize
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
    cut = RWNCut(threshold=0.5, min_size=2, upsample="nearest")
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


def test_source_is_stated_not_guessed():
    with pytest.raises(ValueError, match="no longer guesses"):
        RWNCut(source="auto")
    assert RWNCut().source == "attention"
    P = attention_like(1, 17, seed=6, dtype=torch.float32)
    cut = RWNCut(min_size=2)
    with pytest.raises(ValueError, match="hf_attention_to_transition"):  # CLS column dropped: rows ~0.9
        cut(P[:, 1:, 1:], grid=(4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        cut(P[:, 1:, 1:] - 0.01, grid=(4, 4))
    with pytest.raises(ValueError, match="floating"):
        cut((P[:, 1:, 1:] * 100).long(), grid=(4, 4))
    with pytest.raises(ValueError, match="features"):  # features given as attention: not square
        cut(torch.randn(1, 16, 8), grid=(4, 4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_attention_is_renormalised(dtype):
    scores = torch.randn(2, 64, 64, generator=torch.Generator().manual_seed(7)) * 3
    P = torch.softmax(scores.to(dtype), -1)
    off = float((P.float().sum(-1) - 1).abs().max())
    assert off > 1e-4  # beyond the float32 tolerance: rejected before
    out = RWNCut(threshold="dynamic", min_size=2).segment(P, grid=(8, 8))
    up = P.float()
    ref = recursive_ncut(reversibilize(up / up.sum(-1, keepdim=True)), threshold="dynamic", min_size=2)
    assert torch.equal(out.segmentation.labels, ref.labels)
    assert torch.equal(out.graph, reversibilize(up / up.sum(-1, keepdim=True)))


def test_power_needs_attention():
    with pytest.raises(ValueError, match="power"):
        RWNCut(source="features", power=2)


def test_concept_upsampling_needs_features():
    P, _ = _grid_attention()
    cut = RWNCut(min_size=2)  # upsample="concept" by default
    with pytest.raises(ValueError, match="upsample='concept'"):
        cut(P, grid=(6, 6), output_size=(12, 12))
    assert cut(P, grid=(6, 6)).shape == (2, 6, 6)  # token labels need no features
    feats = torch.randn(2, 36, 8, generator=torch.Generator().manual_seed(1))
    assert cut(P, grid=(6, 6), output_size=(12, 12), features=feats).shape == (2, 12, 12)
    assert RWNCut(min_size=2, upsample="nearest")(P, grid=(6, 6), output_size=(12, 12)).shape == (2, 12, 12)


def test_one_set_of_defaults():
    defaults = CutConfig().as_dict()
    assert defaults["threshold"] == "dynamic" and defaults["upsample"] == "concept"
    assert defaults["source"] == "attention"
    for cls in (RWNCut, DiffCut):
        params = inspect.signature(cls).parameters
        assert {k: params[k].default for k in defaults} == defaults, cls
    assert RWNCut().get_config() == defaults


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": "often"}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"min_size": 0}, "min_size"),
        ({"max_depth": -1}, "max_depth"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"method": "qr"}, "method"),
        ({"tol": 0.0}, "tol"),
        ({"tol": math.inf}, "tol"),
        ({"threshold": "dynamic", "full_hierarchy": False}, "full_hierarchy"),
        ({"refine": "yes"}, "refine"),
    ],
)
def test_constructor_checks_every_setting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RWNCut(**kwargs)
    with pytest.raises(ValueError, match=match):
        DiffCut(torch.nn.Identity(), **kwargs)


def test_config_travels_with_the_module():
    cut = RWNCut(threshold=0.3, power=2, min_size=2, upsample="nearest")
    config = cut.get_config()
    assert RWNCut.from_config(config).get_config() == config
    text = repr(cut)
    assert all(f"{k}=" in text for k in config) and "threshold=0.3" in text
    with pytest.raises(ValueError, match="config"):
        RWNCut.from_config({**config, "colour": "red"})

    buf = io.BytesIO()
    torch.save(cut.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["_extra_state"]["config"]["threshold"] == 0.3
    RWNCut.from_config(config).load_state_dict(state)  # same settings: fine
    with pytest.raises(ValueError, match=r"threshold=0\.3 \(this module: 'dynamic'\)"):
        RWNCut(power=2, min_size=2, upsample="nearest").load_state_dict(state)
    rebuilt = RWNCut.from_config(state["_extra_state"]["config"])
    assert rebuilt.get_config() == config

    model = DiffCut(torch.nn.Linear(2, 2), threshold=0.3)
    with pytest.raises(ValueError, match="threshold"):
        DiffCut(torch.nn.Linear(2, 2)).load_state_dict(model.state_dict())
    assert DiffCut.from_config(torch.nn.Linear(2, 2), model.get_config()).get_config() == model.get_config()


def test_output_repr_is_short():
    P, _ = _grid_attention()
    out = RWNCut(min_size=2).segment(P, grid=(6, 6))
    text = repr(out)
    assert "tensor(" not in text and len(text) < 400
    assert "graph=Tensor(2, 36, 36) float32 cpu" in text and "Segmentation(labels=Tensor(2, 36)" in text
