"""lanczos_fiedler_cuda against dense float64 eigh and the torch Lanczos, both launch strategies.

Eigenpairs are checked by eigenvalue and residual (recomputed in float64 from the returned x), and
element-wise only where the spectral gap makes the eigenvector well defined.
"""

from __future__ import annotations

import pytest
import torch

from tests.gpu.conftest import STORAGE, attention_graph, padded_batch, poison_allocator, requires_gpu, stored

pytestmark = requires_gpu

STRATEGIES = ["fused", "tiled"]


def _solve(W, sizes=None, **kw):
    from diffcut_gpu.kernels import lanczos_fiedler_cuda

    return lanczos_fiedler_cuda(W, sizes, **kw)


def _clean(W: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    """float64 copy with the padding zeroed (the references need finite padding)."""
    from diffcut_gpu.spectral.lanczos import node_mask

    W64 = stored(W)
    valid = node_mask(sizes, W.shape[0], W.shape[-1], W.device)
    block = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    return torch.where(block, W64, torch.zeros((), dtype=W64.dtype, device=W.device))


def _top_two(W64: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
    """(B, 2) two largest eigenvalues of A restricted to u0's complement (float64)."""
    from diffcut_gpu.spectral.lanczos import normalized_scaling

    s, u0, active = normalized_scaling(W64, sizes)
    A = s.unsqueeze(-1) * W64 * s.unsqueeze(-2) - 3 * u0.unsqueeze(-1) * u0.unsqueeze(-2)
    A.diagonal(dim1=-2, dim2=-1).sub_(2 * (~active).to(W64.dtype))
    return torch.linalg.eigvalsh(A)[:, -2:].flip(-1)


def _check_pair(W, sizes, res, *, tol=1e-5):
    """float64 checks of a FiedlerResult: finite, x = D^-1/2 v with v unit, v orthogonal to u0,
    ||A v - mu v|| small, eigenvalue equal to dense eigh, sign convention, zeros at padding."""
    from diffcut_gpu.spectral.fiedler import eigh_fiedler
    from diffcut_gpu.spectral.lanczos import apply_normalized, node_mask, normalized_scaling

    W64 = _clean(W, sizes)
    b, n, _ = W.shape
    for t in res:
        assert torch.isfinite(t.double()).all()
    assert res.x.dtype == torch.float32 and res.x.shape == (b, n)
    assert bool(res.converged.all()) and bool((res.residual <= tol).all())
    ref = eigh_fiedler(W64, sizes)
    torch.testing.assert_close(res.lam.double(), ref.lam, atol=3 * tol, rtol=0)
    s, u0, active = normalized_scaling(W64, sizes)
    x = res.x.double()
    v = torch.where(active, x / torch.where(active, s, torch.ones_like(s)), torch.zeros_like(x))
    solvable = active.sum(-1) >= 2
    norm = v.norm(dim=-1)
    assert torch.allclose(norm[solvable], torch.ones_like(norm[solvable]), atol=1e-5)
    assert ((u0 * v).sum(-1).abs() <= 1e-4).all()
    mu = 1 - res.lam.double()
    r = (apply_normalized(W64, s, v) - mu.unsqueeze(-1) * v).norm(dim=-1)
    assert (r <= 3 * tol).all(), r
    valid = node_mask(sizes, b, n, W.device)
    assert (res.x[~valid] == 0).all() and (res.x[~active] == 0).all()
    top = x.abs().argmax(-1, keepdim=True)
    assert (x.gather(-1, top) >= 0).all()
    gap = _top_two(W64, sizes)
    clear = solvable & (gap[:, 0] - gap[:, 1] > 1e-2)
    if bool(clear.any()):
        torch.testing.assert_close(x[clear], ref.x[clear], atol=1e-3 * float(ref.x.abs().max()), rtol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("n", [2, 3, 17, 64, 127, 300])
def test_matches_ref(n, dtype, strategy):
    W = attention_graph(3, n, seed=100 + n, dtype=dtype)
    poison_allocator()
    res = _solve(W, strategy=strategy)
    _check_pair(W, None, res)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_large(strategy, dtype):
    W = attention_graph(4, 1024, seed=7, dtype=dtype, rank=16)
    res = _solve(W, strategy=strategy)
    _check_pair(W, None, res)


def test_single_large_graph_tiled():
    W = attention_graph(1, 4096, seed=11, dtype=torch.float16, rank=16)
    res = _solve(W, strategy="tiled")
    _check_pair(W, None, res)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", STORAGE)
def test_padded_bucket(strategy, dtype):
    W, sizes = padded_batch([2, 5, 16, 33, 64, 64, 47], seed=3, dtype=dtype)  # NaN padding
    poison_allocator()
    res = _solve(W, sizes, strategy=strategy)
    _check_pair(W, sizes, res)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_matches_torch_path(strategy):
    from diffcut_gpu.spectral.lanczos import lanczos_fiedler

    W, sizes = padded_batch([40, 64, 17], seed=21, pad_value=0.0)
    res = _solve(W, sizes, strategy=strategy)
    ref = lanczos_fiedler(W, sizes)
    torch.testing.assert_close(res.lam, ref.lam, atol=1e-5, rtol=0)
    assert bool(ref.converged.all()) and bool(res.converged.all())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_degenerate(strategy):
    W = attention_graph(4, 16, seed=5)
    W[1, 3, :] = 0  # node 3 of graph 1 isolated
    W[1, :, 3] = 0
    W[2] = 0  # no edges at all
    sizes = torch.tensor([1, 16, 16, 16], device="cuda")  # graph 0: a single node
    poison_allocator()
    res = _solve(W, sizes, strategy=strategy)
    assert res.lam[0] == 0 and res.lam[2] == 0 and (res.x[0] == 0).all() and (res.x[2] == 0).all()
    assert bool(res.converged[0]) and bool(res.converged[2]) and res.iterations[0] == 0
    assert res.x[1, 3] == 0
    _check_pair(W[1:2], None, type(res)(*(t[1:2] for t in res)))
    _check_pair(W[3:], None, type(res)(*(t[3:] for t in res)))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_disconnected(strategy):
    W = attention_graph(1, 40, seed=9)
    W[:, :20, 20:] = 0
    W[:, 20:, :20] = 0
    res = _solve(W, strategy=strategy)
    assert float(res.lam[0]) <= 1e-5 and bool(res.converged[0])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_repeatable(strategy):
    W, sizes = padded_batch([30, 64, 50], seed=13, dtype=torch.float16)
    first = _solve(W, sizes, strategy=strategy)
    second = _solve(W, sizes, strategy=strategy)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_max_iter_budget(strategy):
    W = attention_graph(2, 200, seed=17)
    res = _solve(W, strategy=strategy, max_iter=3, krylov_dim=8)
    assert (res.iterations <= 3).all() and (res.iterations >= 1).all()
    assert torch.isfinite(res.lam).all() and torch.isfinite(res.x).all()
    assert torch.equal(res.converged, res.residual <= 1e-5)


def test_strategies_agree():
    W = attention_graph(3, 200, seed=23, dtype=torch.bfloat16)
    a, b = _solve(W, strategy="fused"), _solve(W, strategy="tiled")
    torch.testing.assert_close(a.lam, b.lam, atol=1e-5, rtol=0)


def test_exception():
    W = attention_graph(2, 8, seed=1)
    with pytest.raises(ValueError, match="CUDA tensor"):
        _solve(W.cpu())
    with pytest.raises(ValueError, match="dtype"):
        _solve(W.double())
    with pytest.raises(ValueError, match="krylov_dim"):
        _solve(attention_graph(1, 100, seed=1), krylov_dim=65)
    with pytest.raises(ValueError, match="strategy"):
        _solve(W, strategy="fast")
    with pytest.raises(ValueError, match="max_iter"):
        _solve(W, max_iter=0)
