"""spectral.lanczos: the batched thick-restart block Lanczos solver called directly, and its helpers.

Through ``fiedler(method="lanczos")`` it is tested in test_fiedler.py, whose float64 reference and graph
makers these tests share.
"""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.spectral.lanczos import _fill_dead, fix_sign, lanczos_fiedler
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
