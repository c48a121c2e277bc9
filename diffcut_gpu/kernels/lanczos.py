"""CUDA Lanczos for the Fiedler pair (kernels in ``csrc/lanczos.cu``), twin of the torch reference
``diffcut_gpu.spectral.lanczos.lanczos_fiedler`` in contract, not step for step.

Shared with the reference: the problem (top eigenpair of A = D^-1/2 W D^-1/2 on the complement of
u0), thick restarts keeping the ``keep`` largest Ritz vectors, CGS2 orthogonalisation, the true
residual ||A v - mu v|| as the stopping test, the integer-hash start vector, the sign rule, the
outputs, and the meaning of ``max_iter``: at most that many passes over W for expansion steps per graph.

Different from the reference:

* single-vector Lanczos (one vector per step, one matvec per pass over W), where the reference
  multiplies a block of ``BLOCK = 2`` vectors per pass (a guard against a start vector that misses the
  Fiedler direction);
* convergence is tested at the end of every cycle (m steps, or fewer on breakdown) with the true
  residual, which costs one more pass over W per cycle; the reference tests a free estimate at
  cost-model checkpoints and forms the residual only when the estimate passes;
* float32 throughout (the graph may be stored in float32, float16 or bfloat16), no float64 rescue;
* ``iterations`` counts single-vector steps; m is capped at 64 and ``keep`` at 16.

So both meet ``tol`` on the same graphs in the usual case, with Fiedler vectors equal to about tol /
spectral gap, but iteration counts and rounding differ. Two launch strategies, chosen per call:

* ``"fused"``: one thread block solves one graph from start to finish, matvec included: one launch,
  no host round trip. Each step streams the graph through one SM, so this wins when the batch fills
  the GPU (B >= number of SMs) or the graphs are small.
* ``"tiled"``: the matvec is spread over N / 32 blocks per graph, the rest of a step runs one block
  per graph; two launches per step and one host poll per ``krylov_dim`` steps. Wins for a few large
  graphs (the top levels of the recursion).

``strategy="auto"`` compares a bandwidth model of both (docs/kernels.md); its constants are estimates
until a GPU session measures them. The fused strategy falls back to the tiled one when its shared
memory (``limits.lanczos_shared_memory``) exceeds the device's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_int
from .._types import KEEP, KRYLOV_DIM, FiedlerResult
from . import limits
from ._common import (
    aligned_rows,
    batch_chunks,
    cdiv,
    check_graph_storage,
    check_valid_block,
    device_index,
    device_limits,
    require_device,
    sizes_tensor,
)
from .interop import cupy_args, f32, i32, i64, launch, on_torch_stream, prepare_shared_memory
from .loader import get_kernel

__all__ = ["MAX_KEEP", "MAX_KRYLOV_DIM", "STRATEGIES", "choose_strategy", "lanczos_fiedler_cuda"]

MAX_KRYLOV_DIM = 64  # LZ_MAX_M in csrc/lanczos.cu
MAX_KEEP = 16  # LZ_MAX_KEEP
STRATEGIES = ("auto", "fused", "tiled")

_THREADS = 512  # LZ_THREADS
_TILE_THREADS = 256  # LZ_TILE_THREADS
_TILE_ROWS = 32  # LZ_TILE_ROWS
_STATE_INTS, _STATE_FLOATS, _DONE = 8, 4, 2

# Bandwidth model of one Lanczos step (see docs/kernels.md): estimates for an H100, to be measured.
PER_SM_BYTES_PER_S = 40e9  # one block streaming a graph through one SM
DEVICE_BYTES_PER_S = 2.5e12  # all SMs streaming (achievable HBM3 bandwidth)
LAUNCH_S = 4e-6  # one kernel launch, back to back on a stream


def supports(dtype: torch.dtype, n: int, batch: int, capability: tuple[int, int], shared_memory: int) -> str | None:
    """None if ``lanczos_fiedler_cuda`` (default Krylov dimension) can solve (B, n, n) ``dtype`` graphs.

    The tiled strategy is the fallback whenever the fused one does not fit, so its per-step shared memory
    (two m x m float32 matrices) and its 2-D grid are what must fit.
    """
    from .dispatch import launch_support

    m = max(1, min(KRYLOV_DIM, n - 1))
    return launch_support(dtype, (torch.float32, torch.float16, torch.bfloat16), capability, batch=batch,
                          shared_need=2 * m * m * 4, shared_memory=shared_memory)


def choose_strategy(batch: int, n: int, elem: int, num_sms: int) -> str:
    """``"fused"`` or ``"tiled"``: whichever the bandwidth model says finishes a Lanczos step first."""
    graph_bytes = n * n * elem
    fused = cdiv(batch, num_sms) * graph_bytes / PER_SM_BYTES_PER_S
    tiled = batch * graph_bytes / DEVICE_BYTES_PER_S + 2 * LAUNCH_S
    return "fused" if fused <= tiled else "tiled"


def lanczos_fiedler_cuda(
    W: Tensor,
    sizes: Tensor | None = None,
    tol: float = 1e-5,
    max_iter: int | None = None,
    *,
    krylov_dim: int | None = None,
    keep: int | None = None,
    strategy: str = "auto",
    check_values: bool = True,
    poll: bool = True,
):
    """Fiedler pairs of a batch of graphs by batched thick-restart Lanczos on the GPU.

    Args:
        W: (B, N, N) CUDA tensor, symmetric non-negative graphs stored as float32, float16 or bfloat16;
            entries outside the valid blocks are never read.
        sizes: (B,) int valid block sizes, or None (all N).
        tol: a graph stops once its true residual ||A v - mu v|| <= tol.
        max_iter: most Lanczos steps per graph, i.e. passes over W for expansion (as for the reference;
            each cycle's residual adds one pass); None means 40 * m.
        krylov_dim: basis size m per cycle, capped at N - 1 (default: the reference's KRYLOV_DIM, 48;
            at most 64 here).
        keep: Ritz vectors kept at each thick restart, capped at m - 1 (default: the reference's KEEP,
            16; at most 16 here).
        strategy: ``"auto"``, ``"fused"`` or ``"tiled"`` (see the module docstring).
        check_values: raise on NaN, Inf or negative entries in the valid blocks before any launch (one
            pass over W and one host sync); False for graphs already checked (the recursion's).
        poll: with ``strategy="tiled"``, read once per m steps whether every graph is done, to stop early
            (one host sync each); False runs the whole step budget without reading the host (the device
            sync policy of ``LanczosParams``, used by the recursion on GPUs).

    Returns:
        ``FiedlerResult(lam (B,), x (B, N), residual (B,), iterations (B,) int64, converged (B,) bool)``,
        float32, on W's device; graphs with fewer than two active nodes get lam = 0, x = 0, residual 0.
        Asynchronous: no host sync (beyond ``check_values``), except one poll per m steps with
        ``strategy="tiled"`` and ``poll=True``.

    Raises:
        ValueError: bad arguments, bad values (``check_values``), or a device that cannot run the kernel
            (compute capability, shared memory), before any launch.
    """
    check_graph_storage("W", W)
    b, n, _ = W.shape
    if n < 1:
        raise ValueError(f"W: expected at least 1 node, got N={n}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol: expected a number >= 0, got {tol!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
    krylov_dim = KRYLOV_DIM if krylov_dim is None else krylov_dim
    keep = KEEP if keep is None else keep
    check_int("krylov_dim", krylov_dim, 1)
    check_int("keep", keep, 0)
    m = max(1, min(krylov_dim, n - 1))
    keep = max(0, min(keep, m - 1))
    if m > MAX_KRYLOV_DIM:
        raise ValueError(
            f"krylov_dim: expected at most {MAX_KRYLOV_DIM} for the CUDA backend, got {krylov_dim}"
        )
    if keep > MAX_KEEP:
        raise ValueError(f"keep: expected at most {MAX_KEEP} for the CUDA backend, got {keep}")
    max_iter = 40 * m if max_iter is None else max_iter
    check_int("max_iter", max_iter, 1)
    tau = 10 * torch.finfo(torch.float32).eps * math.sqrt(n)

    device = W.device
    sz = sizes_tensor(sizes, b, n, device)
    if check_values:
        check_valid_block("W", W, sz)
    lam = torch.empty(b, dtype=torch.float32, device=device)
    x = torch.empty(b, n, dtype=torch.float32, device=device)
    residual = torch.empty(b, dtype=torch.float32, device=device)
    iterations = torch.empty(b, dtype=torch.int64, device=device)
    converged = torch.empty(b, dtype=torch.bool, device=device)
    result = FiedlerResult(lam, x, residual, iterations, converged)
    if b == 0:
        return result

    num_sms, smem_optin = device_limits(device_index(W))
    if strategy == "auto":
        strategy = choose_strategy(b, n, W.element_size(), num_sms)
    if strategy == "fused" and limits.lanczos_shared_memory(n, m, "fused") > smem_optin:
        strategy = "tiled"
    require_device("W", W, "lanczos", W.dtype, limits.lanczos_shared_memory(n, m, strategy))
    Wa, ldw = aligned_rows(W)
    ldv = cdiv(n, 4) * 4
    V = torch.empty(b, m + 6, ldv, dtype=torch.float32, device=device)
    common = (i32(n), i32(ldv), i32(m), i32(keep), i32(max_iter), f32(tol), f32(tau), V, i64(V.stride(0)))
    outputs = (lam, x, residual, iterations, converged)
    if strategy == "fused":
        kernel = get_kernel("lanczos_fused", W.dtype, device)
        args = (Wa, i64(Wa.stride(0)), i64(ldw), sz, *common, *outputs)
        fused_smem = (2 * ldv + 3 * m * m) * 4  # dynamic part: z, d^-1/2, H, T, Y
        launch(kernel, (b,), (_THREADS,), args, device=device, shared_mem=fused_smem)
        return result

    H = torch.empty(b, m, m, dtype=torch.float32, device=device)
    state = torch.empty(b, _STATE_INTS, dtype=torch.int32, device=device)
    fstate = torch.empty(b, _STATE_FLOATS, dtype=torch.float32, device=device)
    per_graph = (sz, *common, H, state, fstate, *outputs)
    step_smem = 2 * m * m * 4
    degrees = get_kernel("lanczos_degrees", W.dtype, device)
    matvec = get_kernel("lanczos_matvec", W.dtype, device)
    init = get_kernel("lanczos_init", None, device)
    step = get_kernel("lanczos_step", None, device)
    # Each round is one matvec + one step; a graph needs at most max_iter expansion rounds plus one
    # residual round per cycle (a cycle has at least one expansion).
    rounds = 2 * max_iter + 2
    with on_torch_stream(device):
        per_graph_args = cupy_args(per_graph)
        tiles = []  # the 2-D launches carry the batch in gridDim.y: at most MAX_GRID_YZ graphs each
        for b0, b1 in batch_chunks(b):
            graph = (Wa[b0:b1], i64(Wa.stride(0)), i64(ldw), sz[b0:b1], i32(ldv), i32(m), V[b0:b1], i64(V.stride(0)))
            tiles.append(((cdiv(n, _TILE_ROWS), b1 - b0), cupy_args(graph), cupy_args((*graph, state[b0:b1]))))
        prepare_shared_memory(init, step_smem, device)
        prepare_shared_memory(step, step_smem, device)
        for grid, graph_args, _ in tiles:
            degrees(grid, (_TILE_THREADS,), graph_args)
        init((b,), (_THREADS,), per_graph_args, shared_mem=step_smem)
        for r in range(rounds):
            for grid, _, matvec_args in tiles:
                matvec(grid, (_TILE_THREADS,), matvec_args)
            step((b,), (_THREADS,), per_graph_args, shared_mem=step_smem)
            if poll and (r + 1) % m == 0 and bool((state[:, 0] == _DONE).all()):
                break
    return result
