"""Launch limits on a real GPU: the shared-memory opt-in band, batches beyond gridDim.y / z, shared
memory and compute capability against the device, inputs that require grad (DLPack)."""

from __future__ import annotations

import pytest
import torch

from tests.gpu.conftest import attention_graph, requires_gpu

pytestmark = requires_gpu


def test_fused_lanczos_in_the_opt_in_band():
    """N = 2500, m = 48: 47,968 B dynamic + 1,636 B static shared memory (over 48 KiB in total only)."""
    from diffcut_gpu.kernels import lanczos_fiedler_cuda, limits

    need = limits.lanczos_shared_memory(2500, 48, "fused")
    assert need - limits.STATIC_SMEM_BYTES["lanczos_fused"] <= 48 * 1024 < need
    W = attention_graph(1, 2500, seed=31)
    fused = lanczos_fiedler_cuda(W, strategy="fused", max_iter=96)
    tiled = lanczos_fiedler_cuda(W, strategy="tiled", max_iter=96)
    torch.cuda.synchronize()
    torch.testing.assert_close(fused.lam, tiled.lam, atol=1e-6, rtol=0)  # the same arithmetic (emulator: equal)
    torch.testing.assert_close(fused.x, tiled.x, atol=1e-5, rtol=0)


def test_batches_beyond_the_grid_limit():
    """70,000 graphs: the 2-D launches are split at 65,535 and give what the torch twins give."""
    from diffcut_gpu.kernels import gather_subgraphs_cuda, renormalize_rows_cuda, sweep_cut_cuda
    from diffcut_gpu.spectral.sweep import sweep_cut

    b = 70_000
    g = torch.Generator(device="cuda").manual_seed(0)
    W = torch.rand(b, 6, 6, device="cuda", generator=g)
    W = W + W.transpose(1, 2)
    out = renormalize_rows_cuda(W.clone())
    torch.testing.assert_close(out, W / W.sum(-1, keepdim=True), atol=1e-6, rtol=0)
    x = torch.randn(b, 6, device="cuda", generator=g)
    ncut, mask = sweep_cut_cuda(W, x, min_side=1)
    ref_ncut, ref_mask = sweep_cut(W.double(), x)
    torch.testing.assert_close(ncut, ref_ncut, rtol=1e-5, atol=1e-9)
    assert torch.equal(mask, ref_mask)
    ids = torch.arange(b, device="cuda")
    nodes = torch.tensor([[4, 1, 2]], device="cuda").expand(b, 3)
    sub = gather_subgraphs_cuda(W, ids, nodes, torch.full((b,), 3, device="cuda"))
    torch.testing.assert_close(sub, W[:, [4, 1, 2]][:, :, [4, 1, 2]], atol=0, rtol=0)


def test_attention_batch_beyond_grid_z_and_wide_heads():
    from diffcut_gpu.attention.probs import head_mean_attention_ref
    from diffcut_gpu.kernels import limits, record_attention_cuda
    from diffcut_gpu.kernels._common import device_limits

    g = torch.Generator(device="cuda").manual_seed(1)
    q = torch.randn(66_000, 1, 3, 8, device="cuda", generator=g)
    out = record_attention_cuda(q, q, 0.3, accumulate=False)
    torch.testing.assert_close(out.double(), head_mean_attention_ref(q, q, scale=0.3), atol=1e-5, rtol=0)
    q = torch.randn(1, 2, 70, 256, device="cuda", generator=g)  # float32 at head dim 256: 128.5 KiB
    if limits.attention_shared_memory(256, torch.float32) > device_limits(torch.cuda.current_device())[1]:
        with pytest.raises(ValueError, match="shared memory"):
            record_attention_cuda(q, q, 0.0625, accumulate=False)
    else:
        out = record_attention_cuda(q, q, 0.0625, accumulate=False)
        torch.testing.assert_close(out.double(), head_mean_attention_ref(q, q, scale=0.0625), atol=1e-5, rtol=0)


def test_compute_capability_gate():
    from diffcut_gpu.kernels import limits, record_attention_cuda

    q = torch.randn(1, 1, 16, 16, device="cuda").half()
    if torch.cuda.get_device_capability() < limits.min_compute_capability("attention", torch.float16):
        with pytest.raises(ValueError, match="compute capability"):
            record_attention_cuda(q, q, 0.25, accumulate=False)
    else:
        record_attention_cuda(q, q, 0.25, accumulate=False)


def test_inputs_that_require_grad():
    from diffcut_gpu.kernels import lanczos_fiedler_cuda, record_attention_cuda, sweep_cut_cuda

    W = attention_graph(2, 300, seed=5).requires_grad_()
    res = lanczos_fiedler_cuda(W)
    sweep_cut_cuda(W, res.x)
    q = torch.randn(1, 2, 16, 8, device="cuda", requires_grad=True)
    record_attention_cuda(q, q, 0.3, accumulate=False)
    torch.cuda.synchronize()
