"""record_attention_cuda against the float64 head-mean attention and the chunked torch path."""

from __future__ import annotations

import pytest
import torch

from tests.gpu.conftest import STORAGE, requires_gpu

pytestmark = requires_gpu

SHAPES = [  # (B, heads, Nq, Nk, d)
    (1, 1, 1, 1, 1),
    (2, 3, 65, 100, 40),
    (1, 8, 64, 64, 64),
    (2, 2, 130, 77, 33),
    (1, 5, 256, 256, 80),
    (1, 2, 64, 128, 160),
    (1, 1, 17, 300, 256),
]


def _qk(shape, dtype, seed):
    b, h, nq, nk, d = shape
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = (2 * torch.randn(b, h, nq, d, device="cuda", generator=g)).to(dtype)
    k = (2 * torch.randn(b, h, nk, d, device="cuda", generator=g)).to(dtype)
    return q, k


@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_ref(shape, dtype):
    from diffcut_gpu.attention.probs import head_mean_attention, head_mean_attention_ref
    from diffcut_gpu.kernels import record_attention_cuda

    q, k = _qk(shape, dtype, seed=sum(shape))
    scale = shape[-1] ** -0.5
    out = torch.full((shape[0], shape[2], shape[3]), float("nan"), device="cuda")  # poisoned
    record_attention_cuda(q, k, scale, out, accumulate=False)
    ref = head_mean_attention_ref(q, k, scale=scale)  # float64 of the stored q, k
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    chunked = head_mean_attention(q, k, scale=scale, chunk_size=32).float()
    torch.testing.assert_close(out, chunked, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.double().sum(-1), torch.ones_like(ref.sum(-1)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", STORAGE)
def test_accumulate_and_weight(dtype):
    from diffcut_gpu.attention.probs import head_mean_attention_ref
    from diffcut_gpu.kernels import record_attention_cuda

    q, k = _qk((2, 4, 96, 96, 48), dtype, seed=1)
    base = torch.rand(2, 96, 96, device="cuda")
    out = record_attention_cuda(q, k, 0.3, base.clone(), accumulate=True, weight=0.25)
    ref = base.double() + 0.25 * head_mean_attention_ref(q, k, scale=0.3)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_strided_inputs():
    from diffcut_gpu.attention.probs import head_mean_attention_ref
    from diffcut_gpu.kernels import record_attention_cuda

    g = torch.Generator(device="cuda").manual_seed(3)
    hidden = torch.randn(2, 100, 4, 32, device="cuda", generator=g).half()  # (B, N, heads, d) layout
    q = hidden.transpose(1, 2)  # (B, heads, N, d) view, not contiguous
    out = record_attention_cuda(q, q, 32**-0.5, None, accumulate=False)
    torch.testing.assert_close(out.double(), head_mean_attention_ref(q, q, scale=32**-0.5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_sd_layer(dtype):
    """A 64 x 64-token Stable Diffusion layer (8 heads of 40): against the chunked torch path."""
    from diffcut_gpu.attention.probs import head_mean_attention
    from diffcut_gpu.kernels import record_attention_cuda

    q, k = _qk((2, 8, 4096, 4096, 40), dtype, seed=4)
    out = record_attention_cuda(q, k, 40**-0.5, None, accumulate=False)
    ref = head_mean_attention(q, k, scale=40**-0.5, chunk_size=512).float()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_repeatable():
    from diffcut_gpu.kernels import record_attention_cuda

    q, k = _qk((1, 3, 200, 150, 64), torch.float16, seed=9)
    a = record_attention_cuda(q, k, 0.125, None, accumulate=False)
    b = record_attention_cuda(q, k, 0.125, None, accumulate=False)
    assert torch.equal(a, b)


def test_exception():
    from diffcut_gpu.kernels import record_attention_cuda

    q, k = _qk((1, 2, 8, 8, 4), torch.float16, seed=0)
    with pytest.raises(ValueError, match="out"):
        record_attention_cuda(q, k, 0.5, None, accumulate=True)
    with pytest.raises(ValueError, match="k: expected shape"):
        record_attention_cuda(q, k[:, :1], 0.5, None, accumulate=False)
    with pytest.raises(ValueError, match="dtype"):
        record_attention_cuda(q, k.float(), 0.5, None, accumulate=False)
    with pytest.raises(ValueError, match="out: expected a float32"):
        record_attention_cuda(q, k, 0.5, torch.zeros(1, 8, 8, device="cuda", dtype=torch.float16))
