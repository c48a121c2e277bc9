"""spectral.lanczos: the batched thick-restart block Lanczos solver called directly, its helpers, its
settings (``LanczosParams``) and its two sync policies.

Through ``fiedler(method="lanczos")`` it is tested in test_fiedler.py, whose float64 reference and graph
makers these tests share.
"""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import reversibilize
from diffcut_gpu._types import BLOCK, FLOAT32_CYCLES, KRYLOV_DIM, LanczosParams
from diffcut_gpu.spectral.fiedler import eigh_fiedler, fiedler
from diffcut_gpu.spectral.lanczos import _fill_dead, fix_sign, lanczos_fiedler
from tests.conftest import attention_like
from tests.spectral.test_fiedler import ATOL, GRAPHS, TOL, _check_pair, _planted, _random_graph, _reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_thick_restart_matches_ref(dtype):
    """A tiny Krylov basis forces many restarts on attention-like and dense random graphs."""
    W = torch.cat([GRAPHS["attention"](2, 150, 3), GRAPHS["random"](2, 150, 4)]).to(dtype)
    info = lanczos_fiedler(W, None, TOL[dtype], 3000, krylov_dim=8, keep=3)
    assert info.converged.all() and (info.iterations > 8).all()
    for b in range(4):
        _check_pair(W[b], info.lam[b], info.x[b], ATOL[dtype])


@pytest.mark.parametrize("block", [1, 3, 4])
def test_block_sizes(block):
    """Any block size (here with restarts, and more columns than nodes for N = 5) gives the Fiedler pair."""
    W = torch.cat([GRAPHS["attention"](2, 90, 21), GRAPHS["random"](2, 90, 22)])
    info = lanczos_fiedler(W, None, 1e-10, 3000, krylov_dim=12, keep=4, block=block)
    assert info.converged.all()
    for b in range(4):
        _check_pair(W[b], info.lam[b], info.x[b], 1e-9)
    small = GRAPHS["random"](1, 5, 23)
    info = lanczos_fiedler(small, None, 1e-10, 100, block=block)
    _check_pair(small[0], info.lam[0], info.x[0], 1e-9)


@pytest.mark.slow
def test_batched_equals_one_at_a_time():
    """Easy and hard graphs in one Lanczos batch: early finishers are frozen, the rest unaffected (same
    answer up to tol; checkpoint spacing, and so the step count, may depend on the batch)."""
    W = torch.cat([GRAPHS["attention"](2, 150, 11), _planted(2, [50, 50, 50], 12, outside=0.05),
                   _random_graph(2, 150, 13)])
    batch = lanczos_fiedler(W, None, 1e-10, 3000, krylov_dim=12, keep=4)
    assert batch.converged.all() and batch.iterations.unique().numel() > 1
    for b in range(W.shape[0]):
        one = lanczos_fiedler(W[b : b + 1], None, 1e-10, 3000, krylov_dim=12, keep=4)
        assert batch.lam[b].item() == pytest.approx(one.lam.item(), abs=1e-9)
        if _reference(W[b])[2] > 1e-2:
            assert torch.allclose(batch.x[b], one.x[0], atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sign_ties(dtype):
    """Largest |x| entry made positive; magnitudes equal up to rounding count as ties (lowest index wins)."""
    eps = torch.finfo(dtype).eps
    x = torch.tensor([[0.5, 1.0, -(1.0 + 2 * eps), 0.2], [0.1, -0.3, 0.2, -0.9], [0.0, 0.0, 0.0, 0.0]],
                     dtype=dtype)
    out = fix_sign(x)
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], -x[1]) and torch.equal(out[2], x[2])


def test_fresh_directions():
    """Dead basis columns get unit vectors on the active nodes, orthogonal to the rest; none when the
    space is used up (restart after a breakdown)."""
    active = torch.tensor([[True, True, False, True, True], [True, False, True, False, True]])
    g = torch.Generator().manual_seed(0)
    V = torch.zeros(2, 4, 5, dtype=torch.float64)  # rows: u0, columns 0, 1, 2
    start = torch.rand(2, 5, 2, generator=g, dtype=torch.float64) * active[..., None]
    V[:, :2] = torch.linalg.qr(start)[0].mT
    alive = torch.tensor([[True, False, False], [True, False, False]])
    _fill_dead(V, alive, 1, 2, active, 7, 1e-10)
    assert alive.tolist() == [[True, True, True], [True, True, False]]  # graph 1 has 3 active nodes
    for b, k in [(0, 4), (1, 3)]:
        Q = V[b, :k]
        assert torch.allclose(Q @ Q.T, torch.eye(k, dtype=torch.float64), atol=1e-12)
        assert (Q[:, ~active[b]] == 0).all()
    assert (V[1, 3] == 0).all()

def test_params_budget_has_one_meaning():
    p = LanczosParams()
    assert p.basis(1000) == (KRYLOV_DIM, 16, BLOCK)
    assert p.basis(10) == (10, 8, 2)  # m capped near N - 1, rounded up to the block
    assert p.step_budget(1000, rescued=True) == FLOAT32_CYCLES * KRYLOV_DIM // BLOCK
    assert p.step_budget(1000, rescued=False) == 40 * KRYLOV_DIM // BLOCK
    assert p.step_budget(10, rescued=False) == 40 * 5
    assert LanczosParams(max_iter=7).step_budget(1000, rescued=True) == 7
    assert p.with_(tol=None, keep=4) == LanczosParams(keep=4)  # None leaves a field as it is


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"krylov_dim": 0}, "krylov_dim: expected an integer >= 1"),
        ({"block": True}, "block: expected an integer >= 1"),
        ({"keep": -1}, "keep: expected an integer >= 0"),
        ({"max_iter": 0}, "max_iter: expected an integer >= 1"),
        ({"tol": 0.0}, "tol: expected a positive finite float"),
        ({"tol": float("nan")}, "tol: expected a positive finite float"),
        ({"sync": "gpu"}, "sync: expected one of auto, host, device"),
    ],
)
def test_exception_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LanczosParams(**kwargs)


def test_exception_unknown_field_and_positional():
    with pytest.raises(TypeError, match="unknown field"):
        LanczosParams().with_(krylov=3)
    with pytest.raises(TypeError):
        LanczosParams(48)  # keyword-only
    with pytest.raises(TypeError, match="params: expected a LanczosParams"):
        fiedler(torch.ones(1, 4, 4), params={"tol": 1e-3})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_policy_gives_the_host_answer(dtype):
    """Same checkpoints, same finishing rule: fixed step blocks change the cost, not the answer (up to
    rounding: the host policy drops the one-node graph from its batch, which can change bmm rounding)."""
    W = reversibilize(attention_like(4, 90, seed=4, temperature=4.0)).to(dtype)
    sizes = torch.tensor([90, 60, 1, 75])  # one node: nothing to solve
    tol = 1e-5 if dtype == torch.float32 else 1e-9
    host = lanczos_fiedler(W, sizes, tol, 200, params=LanczosParams(sync="host"), krylov_dim=16, keep=6)
    device = lanczos_fiedler(W, sizes, tol, 200, params=LanczosParams(sync="device"), krylov_dim=16, keep=6)
    assert torch.equal(host.iterations, device.iterations) and torch.equal(host.converged, device.converged)
    close = {"rtol": 0, "atol": 1e-5 if dtype == torch.float32 else 1e-12}
    for a, b in zip(host[:3], device[:3]):
        torch.testing.assert_close(a, b, **close)
    assert host.converged.all() and (host.iterations[[0, 1, 3]] > 0).all() and host.lam[2] == host.iterations[2] == 0
    ref = eigh_fiedler(W.double(), sizes)
    torch.testing.assert_close(device.lam.double(), ref.lam, atol=10 * tol, rtol=0)


def test_device_policy_single_graph_and_budget():
    W = reversibilize(attention_like(1, 70, seed=6, temperature=3.0))
    host = lanczos_fiedler(W, None, 1e-10, 500, params=LanczosParams(sync="host"))
    device = lanczos_fiedler(W, None, 1e-10, 500, params=LanczosParams(sync="device"))
    torch.testing.assert_close(host.x, device.x, rtol=0, atol=0)
    short = lanczos_fiedler(W, None, 1e-14, 3, params=LanczosParams(sync="device"))
    assert short.iterations.tolist() == [3] and not short.converged.any()  # the budget is the budget
