"""Lanczos settings (``LanczosParams``) and the two sync policies of the torch Lanczos."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import reversibilize
from diffcut_gpu._types import BLOCK, FLOAT32_CYCLES, KRYLOV_DIM, LanczosParams
from diffcut_gpu.spectral.fiedler import eigh_fiedler, fiedler
from diffcut_gpu.spectral.lanczos import lanczos_fiedler
from tests.conftest import attention_like


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
