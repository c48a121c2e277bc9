"""CUDA twin of ``diffcut_gpu.spectral.sweep.sweep_cut`` (kernels in ``csrc/sweep.cu``).

The nodes are sorted by x with ``torch.sort`` (same key as the reference: float64, stable, padding
last, and valid nodes always before padding); ``sweep_rows`` then reads every valid graph row once, in
its stored dtype, and ``sweep_scan`` turns the per-row sums into the NCut of all N - 1 splits, picks
the first minimum and writes the mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batched_square, check_int, check_sizes, check_tensor, valid_mask
from . import limits
from ._common import (
    aligned_rows,
    batch_chunks,
    cdiv,
    check_finite_valid,
    check_graph_storage,
    check_valid_block,
    require_device,
    sizes_tensor,
)
from .interop import i32, i64, launch
from .loader import get_kernel

__all__ = ["sweep_cut_cuda"]

_THREADS = 256  # SW_THREADS
_TILE_ROWS = 32  # SW_TILE_ROWS
_SCAN_THREADS = 1024  # SW_SCAN_THREADS


def supports(dtype: torch.dtype, n: int, batch: int, capability: tuple[int, int], shared_memory: int) -> str | None:
    """None if ``sweep_cut_cuda`` can run (B, n, n) graphs stored in ``dtype``, else why not."""
    from .dispatch import launch_support

    return launch_support(dtype, (torch.float32, torch.float16, torch.bfloat16), capability, batch=batch,
                          shared_need=cdiv(n, 4) * 16, shared_memory=shared_memory)


def sweep_cut_cuda(
    W: Tensor, x: Tensor, sizes: Tensor | None = None, *, min_side: int = 1, check_values: bool = True
) -> tuple[Tensor, Tensor]:
    """Minimum NCut over all splits of the nodes sorted by ``x``, on the GPU.

    Args:
        W: (B, N, N) CUDA tensor, symmetric non-negative graph stored as float32, float16 or bfloat16.
        x: (B, N) embedding, usually the Fiedler vector.
        sizes: optional (B,) valid sizes.
        min_side: smallest number of nodes either side may keep.
        check_values: validate ``sizes`` against [0, N] and raise on NaN, Inf or negative entries of W's valid
            blocks or non-finite x at valid nodes, before any launch (one pass over W, host reads); False
            for inputs already checked (the recursion's sub-graphs of a checked graph).

    Returns:
        ncut: (B,) float64, +inf where no split satisfies ``min_side``.
        mask: (B, N) bool, True for the nodes with the smallest x up to the best split (ties between
        split points: the smallest S); False at padding.
    """
    check_batched_square("W", W, min_nodes=1)
    check_graph_storage("W", W)
    check_tensor("x", x)
    b, n, _ = W.shape
    if x.shape != (b, n):
        raise ValueError(f"x: expected shape ({b}, {n}), got {tuple(x.shape)}")
    if x.device != W.device:
        raise ValueError(f"x: expected a tensor on {W.device}, got {x.device}")
    check_int("min_side", min_side, 1)
    device = W.device
    sz = sizes_tensor(sizes, b, n, device)
    if check_values:
        check_sizes(sizes, b, n)
        check_valid_block("W", W, sz)
        check_finite_valid("x", x, sz)
    valid = valid_mask(sz, b, n, device)
    # Valid nodes sort first whatever x holds (NaN, +-Inf: clamped to the largest finite values), so the
    # kernel's first sizes[b] positions are exactly the valid nodes and no padding row is ever read.
    big = torch.finfo(torch.float64).max
    key = torch.where(
        valid,
        x.to(torch.float64).nan_to_num(nan=big, posinf=big, neginf=-big),
        torch.full((), float("inf"), dtype=torch.float64, device=device),
    )
    order = torch.sort(key, dim=-1, stable=True).indices.contiguous()

    ncut = torch.empty(b, dtype=torch.float64, device=device)
    mask = torch.empty(b, n, dtype=torch.bool, device=device)
    if b == 0:
        return ncut, mask
    rows_smem = limits.sweep_shared_memory(n)
    require_device("W", W, "sweep", W.dtype, rows_smem)
    Wa, ldw = aligned_rows(W)
    diff = torch.empty(b, n, dtype=torch.float64, device=device)
    deg = torch.empty(b, n, dtype=torch.float64, device=device)
    rows = get_kernel("sweep_rows", W.dtype, device)
    for b0, b1 in batch_chunks(b):  # the batch rides on gridDim.y
        launch(
            rows,
            (cdiv(n, _TILE_ROWS), b1 - b0),
            (_THREADS,),
            (Wa[b0:b1], i64(Wa.stride(0)), i64(ldw), sz[b0:b1], order[b0:b1], i32(n), diff[b0:b1], deg[b0:b1]),
            device=device,
            shared_mem=rows_smem,
        )
    scan = get_kernel("sweep_scan", None, device)
    launch(
        scan, (b,), (_SCAN_THREADS,), (sz, order, diff, deg, i32(n), i32(min_side), ncut, mask), device=device
    )
    return ncut, mask
