"""Graphs from walks and features: stationary distribution, reversibilization, power walk, affinities."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffcut_gpu import (
    attention_row_affinity,
    cosine_affinity,
    ncut_value,
    power_walk,
    reversibilize,
    stationary_distribution,
    symmetrize,
)
from diffcut_gpu.spectral import graph
from tests.conftest import attention_like, planted_attention


def _pi_ref(P: torch.Tensor) -> torch.Tensor:
    """Left eigenvector of eigenvalue 1, float64 dense reference."""
    vals, vecs = torch.linalg.eig(P.double().transpose(-1, -2))
    idx = (vals - 1).abs().argmin(-1)
    v = vecs.gather(-1, idx[:, None, None].expand(-1, P.shape[-1], 1)).squeeze(-1).real
    return v / v.sum(-1, keepdim=True)


class TestStationary:
    def test_matches_ref(self):
        P = attention_like(3, 50, seed=1)
        pi = stationary_distribution(P)
        assert torch.allclose(pi, _pi_ref(P), atol=1e-12)
        assert torch.allclose((pi.unsqueeze(1) @ P).squeeze(1), pi, atol=1e-12)

    def test_float32_input(self):
        P = attention_like(2, 40, seed=2, dtype=torch.float32)
        pi = stationary_distribution(P)
        assert pi.dtype == torch.float32
        assert torch.allclose(pi.double(), _pi_ref(P.double()), atol=1e-6)

    def test_reducible_chain_falls_back(self):
        # Two closed classes: the LU system is singular; power iteration must still give a valid pi.
        P, _ = planted_attention(1, [6, 6], outside=0.0, noise=0.3, seed=3)
        pi = stationary_distribution(P)
        assert torch.isfinite(pi).all() and (pi >= 0).all()
        assert torch.allclose(pi.sum(-1), torch.ones(1, dtype=pi.dtype))
        assert torch.allclose((pi.unsqueeze(1) @ P).squeeze(1), pi, atol=1e-8)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_gmres_path_residual(self, monkeypatch, dtype):
        """Attention-like chains are solved by the mixed-precision GMRES alone, to float64-level residual
        (1e-12) for float64 input and 1e-6 in float32 for float32 input."""

        def no_lu(*args, **kwargs):
            raise AssertionError("the LU fallback must not be needed")

        monkeypatch.setattr(graph, "_stationary_lu", no_lu)
        P = attention_like(4, 300, seed=21, temperature=4.0, dtype=dtype)
        pi = stationary_distribution(P)
        assert pi.dtype == dtype
        res = (torch.bmm(pi.unsqueeze(1), P).squeeze(1) - pi).abs().sum(-1)
        assert float(res.max()) <= (1e-12 if dtype == torch.float64 else 1e-6)
        assert torch.allclose(pi.double(), _pi_ref(P.double()), atol=1e-12 if dtype == torch.float64 else 1e-7)

    def test_float64_from_float32_accepted(self, monkeypatch):
        """Issue 12: float64 attention computed in float32 (rows off by ~1e-7 in float64 terms) must be
        solved directly, at float64 precision for its row-renormalised chain, not by 10,000 power steps."""

        def no_power(*args, **kwargs):
            raise AssertionError("fell back to power iteration")

        monkeypatch.setattr(graph, "_power_iteration", no_power)
        P32 = attention_like(2, 200, seed=22, dtype=torch.float32)
        P = P32.double()
        assert float((P.sum(-1) - 1).abs().max()) > 1e-9  # really off in float64 terms
        chain = P / P.sum(-1, keepdim=True)
        for sweeps in (graph.GMRES_SWEEPS, 0):  # the GMRES path, and the LU path on its own
            monkeypatch.setattr(graph, "GMRES_SWEEPS", sweeps)
            pi = stationary_distribution(P)
            assert float((torch.bmm(pi.unsqueeze(1), chain).squeeze(1) - pi).abs().sum(-1).max()) <= 1e-12

    @pytest.mark.parametrize("outside", [1e-4, 1e-8])
    def test_near_reducible(self, outside):
        """Blocks that almost never exchange: pi is still found to float64-level residual (GMRES may stall
        on the tiny spectral gap, and then the LU fallback solves it)."""
        P, _ = planted_attention(2, [20, 30, 25], outside=outside, noise=0.3, seed=23)
        pi = stationary_distribution(P)
        assert float((torch.bmm(pi.unsqueeze(1), P).squeeze(1) - pi).abs().sum(-1).max()) <= 1e-12
        assert torch.allclose(pi, _pi_ref(P), atol=1e-9)
        pi32 = stationary_distribution(P.float())
        assert float((torch.bmm(pi32.unsqueeze(1), P.float()).squeeze(1) - pi32).abs().sum(-1).max()) <= 1e-6

    def test_lapack_failure_falls_back(self, monkeypatch):
        P = attention_like(2, 30, seed=11)
        monkeypatch.setattr(graph, "GMRES_SWEEPS", 0)  # straight to the LU path

        def broken(*args, **kwargs):
            raise RuntimeError("Pivots given to lu_solve must all be greater or equal to 1")

        monkeypatch.setattr(torch.linalg, "solve_ex", broken)
        assert torch.allclose(stationary_distribution(P), _pi_ref(P), atol=1e-9)

    def test_after_set_num_threads(self):
        """A fresh process that calls ``torch.set_num_threads`` first (as benchmarks and workers do): the
        LU path must solve a batch of large chains without LAPACK errors and without the fallback."""
        code = (
            "import torch\n"
            "from diffcut_gpu.spectral import graph\n"
            "from tests.conftest import attention_like\n"
            "torch.set_num_threads(2)\n"
            "P = attention_like(4, 600, seed=7)\n"
            "graph.GMRES_SWEEPS = 0  # exercise the LU path\n"
            "graph._power_iteration = None  # the fallback must not be needed\n"
            "pi = graph.stationary_distribution(P)\n"
            "print(float((torch.bmm(pi.unsqueeze(1), P).squeeze(1) - pi).abs().max()))\n"
        )
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             cwd=Path(__file__).resolve().parents[2])
        assert run.returncode == 0, run.stderr[-2000:]
        assert "ERROR" not in run.stderr, run.stderr[:500]
        assert float(run.stdout.split()[-1]) < 1e-12

    def test_empty_batch(self):
        assert stationary_distribution(torch.zeros(0, 5, 5, dtype=torch.float64)).shape == (0, 5)

    @pytest.mark.parametrize(
        "bad, match",
        [
            (torch.full((1, 3, 3), float("nan")), "finite"),
            (torch.tensor([[[1.5, -0.5], [0.5, 0.5]]]), "non-negative"),
            (torch.ones(1, 3, 3), "rows summing to 1"),
            (torch.ones(1, 3, 4) / 4, "square"),
            (torch.ones(3, 3) / 3, r"\(B, N, N\)"),
        ],
    )
    def test_exception(self, bad, match):
        with pytest.raises(ValueError, match=match):
            stationary_distribution(bad)


class TestReversibilize:
    def test_symmetric_with_degrees_pi(self):
        P = attention_like(2, 30, seed=4)
        W = reversibilize(P)
        pi = stationary_distribution(P)
        assert torch.allclose(W, W.transpose(-1, -2))
        assert torch.allclose(W.sum(-1), pi, atol=1e-12)

    def test_ncut_is_escape_probability(self):
        # Meila-Shi: NCut(S, S') on W equals Pr(X1 in S'|X0 in S) + Pr(X1 in S|X0 in S'), computed from P, pi.
        P = attention_like(4, 24, seed=5)
        pi = stationary_distribution(P)
        W = reversibilize(P, pi)
        mask = torch.rand(4, 24, generator=torch.Generator().manual_seed(0)) < 0.4
        s, t = mask.double(), (~mask).double()
        escape_s = torch.einsum("bi,bij,bj->b", pi * s, P, t) / (pi * s).sum(-1)
        escape_t = torch.einsum("bi,bij,bj->b", pi * t, P, s) / (pi * t).sum(-1)
        assert torch.allclose(ncut_value(W, mask), escape_s + escape_t, atol=1e-12)

    def test_given_pi_shape_checked(self):
        with pytest.raises(ValueError, match="pi"):
            reversibilize(attention_like(1, 5), torch.ones(1, 4) / 4)

    def test_symmetrize(self):
        P = attention_like(1, 10, seed=6)
        assert torch.allclose(symmetrize(P), (P + P.transpose(-1, -2)) / 2)


class TestPowerWalk:
    @pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 13])
    def test_matches_matrix_power(self, k):
        P = attention_like(2, 20, seed=k)
        assert torch.allclose(power_walk(P, k), torch.linalg.matrix_power(P, k), atol=1e-12)

    def test_rows_stay_stochastic_float32(self):
        P = attention_like(2, 64, seed=7, dtype=torch.float32)
        Pk = power_walk(P, 32)
        assert torch.allclose(Pk.sum(-1), torch.ones(2, 64), atol=1e-6)
        assert torch.allclose(Pk.double(), torch.linalg.matrix_power(P.double(), 32), atol=1e-5)

    def test_k1_returns_copy(self):
        P = attention_like(1, 5)
        out = power_walk(P, 1)
        assert out is not P and torch.equal(out, P)

    @pytest.mark.parametrize("k", [0, -1, 1.5, True])
    def test_exception(self, k):
        with pytest.raises(ValueError, match="k:"):
            power_walk(attention_like(1, 5), k)


class TestAffinity:
    def test_cosine_matches_ref(self):
        F = torch.randn(2, 12, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
        W = cosine_affinity(F, alpha=3.0)
        f = F / F.norm(dim=-1, keepdim=True)
        cos = f @ f.transpose(-1, -2)
        lo = cos.amin(dim=(-1, -2), keepdim=True)
        hi = cos.amax(dim=(-1, -2), keepdim=True)
        assert torch.allclose(W, ((cos - lo) / (hi - lo)) ** 3, atol=1e-12)
        assert torch.allclose(W, W.transpose(-1, -2))

    def test_constant_features_no_structure(self):
        W = cosine_affinity(torch.ones(1, 6, 3))
        assert torch.equal(W, torch.ones(1, 6, 6))

    def test_attention_rows(self):
        P = attention_like(1, 9, seed=9)
        assert torch.allclose(attention_row_affinity(P, 2.0), cosine_affinity(P, 2.0))

    @pytest.mark.parametrize("alpha", [0, -1.0, "x"])
    def test_exception_alpha(self, alpha):
        with pytest.raises(ValueError, match="alpha"):
            cosine_affinity(torch.randn(1, 4, 3), alpha)

    def test_exception_shape(self):
        with pytest.raises(ValueError, match=r"\(B, N, C\)"):
            cosine_affinity(torch.randn(4, 3))
