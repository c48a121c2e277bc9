"""Launch limits and input guards of the kernel wrappers, on CPU (emulator where a kernel must run).

Each test pins one defect found in review: the shared-memory opt-in decided on the dynamic size
alone, batch counts beyond gridDim.y / gridDim.z, compute capability and shared-memory needs never
compared with the device, NaN reaching the kernels, DLPack export of tensors that require grad.
"""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.kernels import _common, attention, gather, interop, lanczos, limits, power, sweep
from tests.kernels import test_emulated as kernels
from tests.kernels.emu import harness

pytestmark = pytest.mark.skipif(not harness.HAVE_TOOLS, reason=harness.SKIP_REASON)

KIB = 1024


class FakeKernel:
    """The attributes of a ``cupy.RawKernel`` that ``interop.prepare_shared_memory`` reads and sets."""

    name = "fake"

    def __init__(self, static: int):
        self.shared_size_bytes = static
        self.max_dynamic_shared_size_bytes = 48 * KIB - static
        self.sets: list[int] = []

    def __setattr__(self, key, value):
        if key == "max_dynamic_shared_size_bytes" and hasattr(self, "sets"):
            self.sets.append(value)
        object.__setattr__(self, key, value)


@pytest.fixture
def device_227k(monkeypatch):
    monkeypatch.setattr(_common, "device_limits", lambda index: (132, 227 * KIB))
    monkeypatch.setattr(_common, "device_index_of", lambda device: 0)
    monkeypatch.setattr(interop, "_opted_in", {})


# ---------------------------------------------------------------------------------------- shared memory
def test_static_sizes_match_the_compiled_structs():
    libs = harness.load_libs()
    size = {name: harness.struct_size(libs, f, name) for f, names in harness.SHARED_STRUCTS.items() for name in names}
    for kernel, structs in harness.STATIC_SHARED.items():
        assert limits.STATIC_SMEM_BYTES[kernel] == sum(size[s] for s in structs), kernel


def test_opt_in_compares_static_plus_dynamic(device_227k):
    static = limits.STATIC_SMEM_BYTES["lanczos_fused"]
    # Fused Lanczos, m = 48: the dynamic part fits 48 KiB for N <= 2688 but the total exceeds it from 2481.
    band = [n for n in range(2400, 2800) if limits.lanczos_shared_memory(n, 48, "fused") > 48 * KIB]
    inside = [n for n in band if limits.lanczos_shared_memory(n, 48, "fused") - static <= 48 * KIB]
    assert inside[0] == 2481 and inside[-1] == 2688
    for total in (47 * KIB, 48 * KIB - static + 4, 60 * KIB):
        k = FakeKernel(static)
        interop.prepare_shared_memory(k, total - static, torch.device("cuda"))
        assert k.sets == ([] if total <= 48 * KIB else [total - static])
        interop.prepare_shared_memory(k, total - static, torch.device("cuda"))  # once per kernel and size
        assert len(k.sets) <= 1
    with pytest.raises(ValueError, match=r"shared memory per block, the device allows 232448.*backend='torch'"):
        interop.prepare_shared_memory(FakeKernel(static), 227 * KIB, torch.device("cuda"))


def test_fused_lanczos_in_the_band_launches(monkeypatch):
    """N = 600, m = 60: 48,000 B dynamic + 1,636 B static. The emulated driver refuses the launch
    unless the kernel was opted in, as a GPU does; the old rule (dynamic > 48 KiB) skipped it."""
    harness.patch_wrappers(monkeypatch)
    monkeypatch.setattr(interop, "_opted_in", {})
    fused = harness.emu_kernel("lanczos_fused", torch.float32)
    monkeypatch.setattr(fused, "max_dynamic_shared_size_bytes", 48 * KIB - fused.shared_size_bytes)
    dynamic = limits.lanczos_shared_memory(600, 60, "fused") - fused.shared_size_bytes
    assert dynamic <= 48 * KIB < dynamic + fused.shared_size_bytes
    W = kernels._graph(1, 600, seed=9)
    with pytest.raises(RuntimeError, match="launch failed"):
        fused((1,), (512,), (), shared_mem=dynamic)
    a = lanczos.lanczos_fiedler_cuda(W, max_iter=2, krylov_dim=60, strategy="fused")
    b = lanczos.lanczos_fiedler_cuda(W, max_iter=2, krylov_dim=60, strategy="tiled")
    assert fused.max_dynamic_shared_size_bytes == dynamic
    assert torch.equal(a.x, b.x) and torch.equal(a.lam, b.lam)


def test_shared_memory_beyond_the_device_is_refused_or_avoided(monkeypatch):
    harness.patch_wrappers(monkeypatch, smem_optin=2560)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 8, 256, generator=g)
    assert limits.attention_shared_memory(256, torch.float32) == 131_584  # 128.5 KiB: fine on H100, not on sm_86
    with pytest.raises(ValueError, match=r"q: the CUDA attention kernel needs 131584 bytes.*backend='torch'"):
        attention.record_attention_cuda(q, q, 0.1, accumulate=False)
    W = kernels._graph(2, 1100, seed=3)
    with pytest.raises(ValueError, match="W: the CUDA sweep kernel needs 4400 bytes of shared memory"):
        sweep.sweep_cut_cuda(W, torch.randn(2, 1100, generator=g))
    launches = harness.LAUNCHES.copy()
    assert limits.lanczos_shared_memory(40, 8, "fused") > 2560 >= limits.lanczos_shared_memory(40, 8, "tiled")
    res = lanczos.lanczos_fiedler_cuda(W[:, :40, :40], krylov_dim=8, strategy="fused")  # does not fit: tiled
    assert harness.LAUNCHES["lanczos_step"] > launches["lanczos_step"]
    assert harness.LAUNCHES["lanczos_fused_f32"] == launches["lanczos_fused_f32"]
    assert bool(res.converged.all())


# ---------------------------------------------------------------------------------------- grid
def test_batches_beyond_the_grid_limit_are_chunked(monkeypatch):
    """With gridDim.y / z capped at 2 (the emulated driver refuses more), every wrapper splits its
    launches and returns exactly what one launch gives."""
    harness.patch_wrappers(monkeypatch)
    g = torch.Generator().manual_seed(4)
    W = kernels._graph(5, 24, seed=4)
    x = torch.randn(5, 24, generator=g)
    sizes = torch.tensor([24, 20, 9, 24, 3])
    node_index = torch.stack([torch.randperm(24, generator=g)[:10] for _ in range(5)])
    q = torch.randn(5, 2, 9, 8, generator=g)
    P = W / W.sum(-1, keepdim=True)

    def run():
        return (
            sweep.sweep_cut_cuda(W, x, sizes, min_side=2),
            gather.gather_subgraphs_cuda(W, torch.tensor([0, 4, 2, 1, 3]), node_index, torch.full((5,), 10)),
            power.renormalize_rows_cuda(P.clone()),
            lanczos.lanczos_fiedler_cuda(W, sizes, krylov_dim=6, strategy="tiled"),
            attention.record_attention_cuda(q, q, 0.3, accumulate=False),
        )

    whole = run()
    monkeypatch.setattr(limits, "MAX_GRID_YZ", 2)
    with pytest.raises(RuntimeError, match="beyond the device's limits"):
        args = (P.clone(), interop.i64(24 * 24), interop.i64(24), interop.i32(24))
        harness.emu_kernel("renorm_rows", torch.float32)((1, 3), (64,), args)
    for a, b in zip(whole, run()):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(u, v)


def test_grid_check_names_the_fix():
    with pytest.raises(ValueError, match=r"grid: expected at most .* 65535 blocks.*batch_chunks"):
        interop.check_grid((1, 70_000), (256,))
    with pytest.raises(ValueError, match="block: expected 1 to 1024 threads"):
        interop.check_grid((1,), (2048,))
    assert _common.batch_chunks(0) == [] and _common.batch_chunks(65_536) == [(0, 65_535), (65_535, 65_536)]


# ---------------------------------------------------------------------------------------- capability
def test_compute_capability_gate(monkeypatch):
    """sm_75: the 16-bit attention scores need mma (sm_80) and are refused; everything else runs."""
    harness.patch_wrappers(monkeypatch, capability=(7, 5))
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 2, 9, 16, generator=g)
    with pytest.raises(ValueError, match=r"compute capability 8\.0 or newer for float16 inputs, this device has 7\.5"):
        attention.record_attention_cuda(q.half(), q.half(), 0.25, accumulate=False)
    assert limits.min_compute_capability("attention", torch.float32) == (7, 5)
    out = attention.record_attention_cuda(q, q, 0.25, accumulate=False)
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 9))
    W = kernels._graph(2, 20, seed=6).bfloat16()
    assert bool(lanczos.lanczos_fiedler_cuda(W, krylov_dim=8).converged.all())
    harness.patch_wrappers(monkeypatch, capability=(7, 0))
    with pytest.raises(ValueError, match=r"compute capability 7\.5 or newer"):
        lanczos.lanczos_fiedler_cuda(W, krylov_dim=8)


# ---------------------------------------------------------------------------------------- values
def test_values_are_checked_before_any_kernel(monkeypatch):
    harness.patch_wrappers(monkeypatch)
    W = kernels._graph(2, 16, seed=7)
    sizes = torch.tensor([16, 10])
    x = torch.randn(2, 16)
    launches = sum(harness.LAUNCHES.values())
    for bad in (float("nan"), float("inf"), -1.0):
        Wb = W.clone()
        Wb[1, 3, 4] = bad
        with pytest.raises(ValueError, match="W: expected finite non-negative entries in the valid blocks"):
            lanczos.lanczos_fiedler_cuda(Wb, sizes)
        with pytest.raises(ValueError, match="W: expected finite non-negative entries in the valid blocks"):
            sweep.sweep_cut_cuda(Wb, x, sizes)
    xb = x.clone()
    xb[0, 2] = float("nan")
    with pytest.raises(ValueError, match="x: expected finite values at the valid nodes"):
        sweep.sweep_cut_cuda(W, xb, sizes)
    assert sum(harness.LAUNCHES.values()) == launches  # no kernel ran
    Wp, xp = W.clone(), x.clone()
    Wp[1, 12, :] = float("nan")  # padding of graph 1: not checked, never read
    xp[1, 12] = float("nan")
    lanczos.lanczos_fiedler_cuda(Wp, sizes)
    sweep.sweep_cut_cuda(Wp, xp, sizes)


def test_nan_reaching_the_kernels_stays_contained(monkeypatch):
    """check_values=False with NaN inside a valid block (strict emulator: NaN-poisoned shared memory):
    that graph ends unconverged, the other graphs of the batch are untouched; NaN in x sorts last among
    the valid nodes and no padding row is read."""
    harness.patch_wrappers(monkeypatch)
    W = kernels._graph(3, 20, seed=8)
    clean = lanczos.lanczos_fiedler_cuda(W, krylov_dim=8, max_iter=40, strategy="fused")
    Wb = W.clone()
    Wb[1, 2, 5] = Wb[1, 5, 2] = float("nan")
    with harness.options(harness.load_libs(), harness.STRICT, seed=5):
        for strategy in ("fused", "tiled"):
            res = lanczos.lanczos_fiedler_cuda(Wb, krylov_dim=8, max_iter=40, strategy=strategy, check_values=False)
            assert not bool(res.converged[1])
            for f in ("lam", "x", "residual", "converged"):
                keep = [0, 2]
                assert torch.equal(getattr(res, f)[keep], getattr(clean, f)[keep]), (strategy, f)
        sizes = torch.tensor([20, 14, 20])
        Wp = W.clone()
        Wp[1, 14:, :] = Wp[1, :, 14:] = float("nan")  # NaN padding: a read of it would poison the sums
        x = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
        x[1, 4] = float("nan")
        ncut, mask = sweep.sweep_cut_cuda(Wp, x, sizes, min_side=2, check_values=False)
    from diffcut_gpu.spectral.sweep import sweep_cut

    big = torch.finfo(torch.float64).max
    ref_ncut, ref_mask = sweep_cut(Wp.nan_to_num(nan=0.0).double(), x.double().nan_to_num(nan=big), sizes, min_side=2)
    torch.testing.assert_close(ncut, ref_ncut, rtol=1e-5, atol=1e-9)
    assert torch.equal(mask, ref_mask) and not bool(mask[1, 14:].any())


# ---------------------------------------------------------------------------------------- DLPack
def test_dlpack_view_detaches_and_reinterprets():
    t = torch.ones(4, requires_grad=True)
    with pytest.raises(BufferError, match="require gradient"):
        t.__dlpack__()  # the defect: exporting a tensor that requires grad raises
    src = t * 2
    view = interop.dlpack_view(src)
    assert not view.requires_grad and view.data_ptr() == src.data_ptr()
    torch.from_dlpack(view.__dlpack__())  # exports
    b = torch.ones(3, dtype=torch.bfloat16, requires_grad=True)
    raw = interop.dlpack_view(b)
    assert raw.dtype == torch.int16 and raw.data_ptr() == b.data_ptr()
    assert interop.dlpack_view(torch.ones(2, dtype=torch.bool)).dtype == torch.uint8


def test_tiled_lanczos_without_polling_reads_no_host_value(monkeypatch):
    """``poll=False`` (the recursion's device sync policy) runs the whole step budget with no host read
    and gives the answer the polling run gives (finished graphs stay frozen)."""
    from benchmarks.syncs import SyncCounter

    harness.patch_wrappers(monkeypatch)
    W = kernels._graph(2, 24, seed=4)
    polled = lanczos.lanczos_fiedler_cuda(W, krylov_dim=8, max_iter=40, strategy="tiled", check_values=False)
    with SyncCounter() as counter:
        quiet = lanczos.lanczos_fiedler_cuda(W, krylov_dim=8, max_iter=40, strategy="tiled", check_values=False,
                                             poll=False)
    assert counter.total == 0, counter.counts
    assert quiet.converged.all()
    for f in ("lam", "x", "residual", "converged"):
        assert torch.equal(getattr(quiet, f), getattr(polled, f)), f
