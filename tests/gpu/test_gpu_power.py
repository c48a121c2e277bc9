"""power_walk_cuda against the torch power walk and its float64 run; the fused renormalisation alone."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import attention_like
from tests.gpu.conftest import poison_allocator, requires_gpu

pytestmark = requires_gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n", [1, 2, 17, 64, 301])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_matches_ref(dtype, n, k):
    from diffcut_gpu.kernels import power_walk_cuda
    from diffcut_gpu.spectral.graph import power_walk

    P = attention_like(3, n, seed=n + k).to(device="cuda", dtype=dtype)
    P = P / P.float().sum(-1, keepdim=True).to(dtype)  # rows of the stored values sum to 1
    out = power_walk_cuda(P, k)
    ref = power_walk(P, k)
    ref64 = power_walk(P.double(), k)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, ref, atol=tol, rtol=0)
    torch.testing.assert_close(out.double(), ref64, atol=10 * tol, rtol=0)
    torch.testing.assert_close(out.double().sum(-1), torch.ones_like(ref64.sum(-1)), atol=10 * tol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_renormalize_rows(dtype):
    from diffcut_gpu.kernels import renormalize_rows_cuda

    g = torch.Generator(device="cuda").manual_seed(0)
    P = torch.rand(4, 77, 77, device="cuda", dtype=dtype, generator=g)
    P[1, 5] = 0  # a zero row stays zero (divided by tiny)
    ref = P / P.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    out = renormalize_rows_cuda(P.clone())
    torch.testing.assert_close(out, ref, atol=0, rtol=2 * torch.finfo(dtype).eps)
    assert (out[1, 5] == 0).all()


def test_repeatable():
    from diffcut_gpu.kernels import power_walk_cuda

    P = attention_like(2, 129, seed=3).to(device="cuda", dtype=torch.float32)
    poison_allocator()
    assert torch.equal(power_walk_cuda(P, 6), power_walk_cuda(P, 6))


def test_exception():
    from diffcut_gpu.kernels import power_walk_cuda

    P = attention_like(1, 8, seed=1).to("cuda")
    with pytest.raises(ValueError, match="k"):
        power_walk_cuda(P, 0)
    with pytest.raises(ValueError, match="rows summing to 1"):
        power_walk_cuda(P * 2, 2)
    with pytest.raises(ValueError, match="CUDA tensor"):
        power_walk_cuda(P.cpu(), 2)
