"""The CUDA kernels, executed on the CPU by an emulator, through their real Python wrappers.

``emu/cuda_emu.h`` turns every CUDA thread into a fiber, so the unchanged kernel source (the text
NVRTC would compile) runs with g++: barriers, warp shuffles and the mma.sync fragment layout are
emulated. The wrappers run unchanged too, launch checks included; only kernel lookup, the CUDA-only
tensor and device checks and the stream are pointed at the emulator (``emu/harness.py``). This
validates indexing, argument order, barriers, launch limits and the algorithms against the float64
references without a GPU; it says nothing about speed or about the GPU memory model (tests/gpu does,
on a GPU). Blocks are capped at 64 threads (2 warps) to keep this quick; ``emu/test_options.py`` runs
the kernels under the emulator's adversarial schedules and poisoned shared memory. Skipped without g++
or libffi's header.
"""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.kernels import attention, gather, lanczos, power, sweep
from tests.conftest import attention_like
from tests.kernels.emu import harness

pytestmark = pytest.mark.skipif(not harness.HAVE_TOOLS, reason=harness.SKIP_REASON)


@pytest.fixture
def emulated(monkeypatch):
    """Point the wrappers' kernel lookup, CUDA checks and stream at the emulator (harness.py)."""
    harness.patch_wrappers(monkeypatch)


def _graph(b: int, n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    from diffcut_gpu.spectral.graph import reversibilize

    W = reversibilize(attention_like(b, n, seed=seed))
    return (W / W.amax(dim=(-1, -2), keepdim=True)).to(dtype)


# ---------------------------------------------------------------------------------------------- Lanczos
@pytest.mark.parametrize("strategy", ["fused", "tiled"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lanczos_matches_eigh(emulated, strategy, dtype):
    from diffcut_gpu.spectral.fiedler import eigh_fiedler
    from diffcut_gpu.spectral.lanczos import apply_normalized, normalized_scaling

    n = 23
    W = torch.full((3, n, n), float("nan"))  # NaN padding must be ignored
    sizes = torch.tensor([n, 12, 2])
    for i, s in enumerate(sizes.tolist()):
        W[i, :s, :s] = _graph(1, s, seed=40 + i)[0]
    W = W.to(dtype)
    res = lanczos.lanczos_fiedler_cuda(W, sizes, krylov_dim=8, keep=3, strategy=strategy)
    valid = torch.arange(n) < sizes.unsqueeze(1)
    W64 = torch.where(
        valid.unsqueeze(-1) & valid.unsqueeze(-2), W.double(), torch.zeros((), dtype=torch.float64)
    )
    ref = eigh_fiedler(W64, sizes)
    assert bool(res.converged.all()), res
    assert (res.residual <= 1e-5).all() and (res.iterations >= 1).all()
    torch.testing.assert_close(res.lam.double(), ref.lam, atol=3e-5, rtol=0)
    s, u0, active = normalized_scaling(W64, sizes)
    v = torch.where(active, res.x.double() / torch.where(active, s, torch.ones_like(s)), torch.zeros_like(s))
    r = (apply_normalized(W64, s, v) - (1 - res.lam.double()).unsqueeze(-1) * v).norm(dim=-1)
    assert (r <= 3e-5).all() and torch.allclose(v.norm(dim=-1), torch.ones(3, dtype=torch.float64), atol=1e-5)
    assert (res.x[~valid] == 0).all() and ((u0 * v).sum(-1).abs() <= 1e-4).all()
    torch.testing.assert_close(res.x.double(), ref.x, atol=1e-3 * float(ref.x.abs().max()), rtol=0)


def test_lanczos_strategies_and_torch_path_agree(emulated):
    from diffcut_gpu.spectral.lanczos import lanczos_fiedler

    W = _graph(2, 30, seed=3)
    fused = lanczos.lanczos_fiedler_cuda(W, krylov_dim=10, keep=4, strategy="fused")
    tiled = lanczos.lanczos_fiedler_cuda(W, krylov_dim=10, keep=4, strategy="tiled")
    ref = lanczos_fiedler(W, krylov_dim=10, keep=4)
    for a in (fused, tiled):
        torch.testing.assert_close(a.lam, ref.lam, atol=2e-5, rtol=0)
    assert torch.equal(fused.lam, tiled.lam) and torch.equal(fused.x, tiled.x)  # same arithmetic, same order


def test_lanczos_degenerate(emulated):
    W = _graph(3, 10, seed=5)
    W[1] = 0
    W[2, 4, :] = 0
    W[2, :, 4] = 0
    res = lanczos.lanczos_fiedler_cuda(W, torch.tensor([1, 10, 10]), strategy="fused")
    assert res.lam[0] == 0 and res.lam[1] == 0 and (res.x[:2] == 0).all() and bool(res.converged[:2].all())
    assert res.x[2, 4] == 0 and bool(res.converged[2])


# ---------------------------------------------------------------------------------------------- sweep cut
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sweep_matches_ref(emulated, dtype):
    from diffcut_gpu.spectral.sweep import sweep_cut

    W = torch.full((3, 37, 37), float("nan"))
    sizes = torch.tensor([37, 20, 1])
    for i, s in enumerate(sizes.tolist()):
        W[i, :s, :s] = _graph(1, s, seed=60 + i)[0]
    W = W.to(dtype)
    x = torch.randn(3, 37, generator=torch.Generator().manual_seed(0))
    clean = torch.nan_to_num(W.float(), nan=0.0)
    for min_side in (1, 3):
        ncut, mask = sweep.sweep_cut_cuda(W, x, sizes, min_side=min_side)
        ref_ncut, ref_mask = sweep_cut(clean.double(), x, sizes, min_side=min_side)
        torch.testing.assert_close(ncut, ref_ncut, rtol=1e-5, atol=1e-9)
        assert torch.equal(mask, ref_mask)


# ---------------------------------------------------------------------------------------------- gather
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_gather_matches_ref(emulated, dtype):
    from diffcut_gpu.spectral.subgraph import gather_subgraphs

    g = torch.Generator().manual_seed(1)
    W = _graph(2, 40, seed=7).to(dtype)
    sizes = torch.tensor([3, 13, 1, 13])
    image_index = torch.tensor([0, 1, 1, 0])
    node_index = torch.zeros(4, 13, dtype=torch.int64)
    for s in range(4):
        node_index[s, : int(sizes[s])] = torch.sort(torch.randperm(40, generator=g)[: int(sizes[s])]).values
    out = gather.gather_subgraphs_cuda(W, image_index, node_index, sizes)
    assert torch.equal(out, gather_subgraphs(W, image_index, node_index, sizes))


# ---------------------------------------------------------------------------------------------- power walk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_power_walk_matches_ref(emulated, dtype):
    from diffcut_gpu.spectral.graph import power_walk

    P = attention_like(2, 19, seed=2).to(dtype)
    for k in (1, 2, 5):
        out = power.power_walk_cuda(P, k)
        torch.testing.assert_close(
            out, power_walk(P, k), atol=1e-6 if dtype == torch.float32 else 1e-13, rtol=0
        )


# ---------------------------------------------------------------------------------------------- attention
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 2, 70, 65, 24), (2, 1, 5, 9, 3)])
def test_attention_matches_ref(emulated, dtype, shape):
    from diffcut_gpu.attention.probs import head_mean_attention_ref

    b, h, nq, nk, d = shape
    g = torch.Generator().manual_seed(sum(shape))
    q = (2 * torch.randn(b, h, nq, d, generator=g)).to(dtype)
    k = (2 * torch.randn(b, h, nk, d, generator=g)).to(dtype)
    out = attention.record_attention_cuda(
        q, k, d**-0.5, torch.full((b, nq, nk), float("nan")), accumulate=False
    )
    torch.testing.assert_close(out.double(), head_mean_attention_ref(q, k, scale=d**-0.5), atol=1e-5, rtol=0)
    base = torch.rand(b, nq, nk, generator=g)
    out = attention.record_attention_cuda(q, k, 0.3, base.clone(), accumulate=True, weight=0.5)
    ref = base.double() + 0.5 * head_mean_attention_ref(q, k, scale=0.3)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
