"""ARPACK Fiedler solver (``arpack_fiedler``) against a float64 dense eigen-solve.

Eigenpairs are checked by eigenvalue and float64 residual (and direction only where the Fiedler
eigenvalue is well separated), with the helpers of ``test_fiedler.py``.
"""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import reversibilize
from diffcut_gpu.spectral import arpack
from diffcut_gpu.spectral.arpack import arpack_fiedler
from diffcut_gpu.spectral.fiedler import fiedler
from diffcut_gpu.spectral.lanczos import hash_vector
from tests.conftest import attention_like
from tests.spectral.test_fiedler import ATOL, GRAPHS, TOL, _check_pair, _planted, _random_graph


@pytest.mark.parametrize("kind", list(GRAPHS))
@pytest.mark.parametrize("n", [3, 33, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_ref(kind, n, dtype):
    W = GRAPHS[kind](2, n, 10 * n + 1).to(dtype)
    info = arpack_fiedler(W, tol=TOL[dtype])
    assert info.converged.all() and (info.residual <= TOL[dtype]).all()
    assert info.lam.dtype == info.x.dtype == dtype
    assert ((info.iterations > 0) == (n > arpack.DENSE_MAX_N)).all()
    for b in range(2):
        _check_pair(W[b], info.lam[b], info.x[b], ATOL[dtype])


def test_same_answer_as_lanczos_on_attention():
    """Clustered attention-like graphs (real-attention stand-ins): same eigenvalue and vector (sign
    included) as the batched Lanczos solver, to the tolerance."""
    W = reversibilize(attention_like(4, 400, seed=31, temperature=3.0)).float()
    ours = arpack_fiedler(W)
    theirs = fiedler(W, method="lanczos", return_info=True)
    assert ours.converged.all()
    assert torch.allclose(ours.lam, theirs.lam, atol=2e-5)
    cos = (ours.x * theirs.x).sum(-1) / (ours.x.norm(dim=-1) * theirs.x.norm(dim=-1))
    assert (cos > 1 - 1e-4).all()
    for b in range(4):
        _check_pair(W[b], ours.lam[b], ours.x[b], ATOL[torch.float32])


def test_negative_mu_takes_the_shift_of_two():
    """Complete graph without self-loops: mu = -1/(n-1) < 0, so the shift that moves u0 to 0 would return
    u0 itself; the solver must detect that and give the true Fiedler pair."""
    n = 60
    W = (torch.ones(1, n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)) * (
        1 + 0.1 * torch.rand(1, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    W = (W + W.transpose(1, 2)) / 2
    info = arpack_fiedler(W, tol=1e-10)
    assert info.converged.all() and float(info.lam) > 1.0
    _check_pair(W[0], info.lam[0], info.x[0], 1e-9, vector=False)


def test_disconnected():
    W = _planted(1, [20, 25, 30], 6, outside=0.0)
    info = arpack_fiedler(W, tol=1e-10)
    assert info.lam.abs().item() <= 1e-9 and info.converged.all()
    _check_pair(W[0], info.lam[0], info.x[0], 1e-9, vector=False)


def test_isolated_nodes():
    W = _random_graph(1, 60, 7)
    iso = torch.tensor([0, 13, 59])
    W[:, iso, :] = 0
    W[:, :, iso] = 0
    info = arpack_fiedler(W, tol=1e-10)
    assert (info.x[0, iso] == 0).all() and info.converged.all()
    _check_pair(W[0], info.lam[0], info.x[0], 1e-9)


def test_edgeless_and_tiny_graphs():
    W = torch.zeros(3, 5, 5, dtype=torch.float64)
    W[1, 2, 2] = 1.0
    W[2, :2, :2] = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    info = arpack_fiedler(W)
    assert info.lam.tolist() == pytest.approx([0.0, 0.0, 2.0], abs=1e-12)
    assert torch.equal(info.x[:2], torch.zeros(2, 5, dtype=torch.float64)) and info.converged.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_padded_equals_unpadded(dtype):
    """Mixed sizes (dense path and ARPACK path) in one padded batch, padding full of garbage."""
    sizes = [5, 2, 61, 137]
    graphs = [GRAPHS["attention"](1, n, n)[0].to(dtype) for n in sizes]
    n = max(sizes)
    W = 1e30 * torch.randn(len(sizes), n, n, generator=torch.Generator().manual_seed(0), dtype=dtype)
    for b, (size, Wb) in enumerate(zip(sizes, graphs)):
        W[b, :size, :size] = Wb
    info = arpack_fiedler(W, sizes=torch.tensor(sizes), tol=TOL[dtype])
    for b, (size, Wb) in enumerate(zip(sizes, graphs)):
        one = arpack_fiedler(Wb[None], tol=TOL[dtype])
        assert torch.equal(info.lam[b], one.lam[0]) and torch.equal(info.x[b, :size], one.x[0])
        assert (info.x[b, size:] == 0).all()
        _check_pair(Wb, info.lam[b], info.x[b, :size], ATOL[dtype])


def test_batch_invariant_exactly():
    """A graph's answer is identical, bit for bit, alone or in any batch (odd N: its matrix sits at a
    different alignment in the batch than alone)."""
    W = reversibilize(attention_like(5, 301, seed=5, temperature=0.5)).float()  # near-uniform: clustered
    batch = arpack_fiedler(W)
    for b in range(5):
        one = arpack_fiedler(W[b : b + 1].clone())
        assert torch.equal(one.x[0], batch.x[b]) and torch.equal(one.lam[0], batch.lam[b])
        assert torch.equal(one.iterations[0], batch.iterations[b])


def test_float32_miss_is_finished_in_float64(monkeypatch):
    """A float32 answer above tol in float64 is redone in float64 and meets tol."""
    W = reversibilize(attention_like(2, 200, seed=9, temperature=2.0)).float()
    info = arpack_fiedler(W, tol=1e-9)  # out of float32's reach
    assert info.converged.all() and (info.residual <= 1e-9).all() and info.x.dtype == torch.float32
    ref = fiedler(W.double(), method="eigh", return_info=True)
    assert torch.allclose(info.lam.double(), ref.lam, atol=1e-7)


def test_rejects_non_cpu():
    with pytest.raises(ValueError, match="CPU"):
        arpack_fiedler(torch.zeros(1, 4, 4, device="meta"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_start_vector_missing_fiedler_direction(dtype):
    """The start vector is exactly orthogonal to the Fiedler vector and mu2 - mu3 = 0.01 (the case that
    makes a one-vector Lanczos without restarts return lam = 0.76): ARPACK still finds lam = 0.75."""
    n = 64
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)])
    H = H / n**0.5  # orthonormal rows, row 0 is u0
    h = hash_vector(n, 0, torch.float64, torch.device("cpu"))  # the solver's start vector
    v2 = (h @ H[2]) * H[1] - (h @ H[1]) * H[2]
    v2 = v2 / v2.norm()
    assert abs(float(h @ v2)) < 1e-12
    W = torch.full((n, n), 1.0 / n, dtype=torch.float64) + 0.25 * torch.outer(v2, v2)
    W = W + 0.24 * torch.outer(H[3], H[3])
    for i in range(4):
        W = W + 0.03 * (-1) ** i * torch.outer(H[4 + i], H[4 + i])
    info = arpack_fiedler(W[None].to(dtype), tol=TOL[dtype])
    assert info.lam.item() == pytest.approx(0.75, abs=ATOL[dtype])
    _check_pair(W, info.lam[0], info.x[0], ATOL[dtype])
