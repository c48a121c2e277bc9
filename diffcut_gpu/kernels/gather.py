"""CUDA twin of ``diffcut_gpu.spectral.subgraph.gather_subgraphs`` (kernel in ``csrc/gather.cu``)."""

from __future__ import annotations

import torch
from torch import Tensor

from . import limits
from ._common import batch_chunks, cdiv, check_cuda_tensor, check_graph_storage, require_device
from .interop import i32, i64, launch
from .loader import get_kernel

__all__ = ["gather_subgraphs_cuda"]

_THREADS = 256  # GA_THREADS
_TILE_ROWS = 32  # GA_TILE_ROWS
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def supports(dtype: torch.dtype, n: int, batch: int, capability: tuple[int, int], shared_memory: int) -> str | None:
    """None if ``gather_subgraphs_cuda`` can gather ``batch`` sub-graphs of width n from ``dtype`` storage."""
    from .dispatch import launch_support

    return launch_support(dtype, _DTYPES, capability, batch=batch, shared_need=4 * n, shared_memory=shared_memory)


def gather_subgraphs_cuda(W: Tensor, image_index: Tensor, node_index: Tensor, sizes: Tensor) -> Tensor:
    """Dense induced sub-graphs on the GPU: out[s] = W[image_index[s]][node_index[s]][:, node_index[s]].

    Args:
        W: (B, N, N) CUDA graphs (float32, float16, bfloat16 or float64).
        image_index: (S,) int64 graph of each segment.
        node_index: (S, n) int64 token ids, padded (any valid id) beyond ``sizes``.
        sizes: (S,) int64 valid sizes.

    Returns:
        (S, n, n) in W's dtype, exactly 0 outside each valid block. Unlike torch indexing, an id outside
        [0, N) (or a graph index outside [0, B)) is clamped instead of raising: no host sync is spent on
        checking ids, and the values gathered for such ids are unspecified.
    """
    check_graph_storage("W", W, _DTYPES)
    for name, t in (("image_index", image_index), ("node_index", node_index), ("sizes", sizes)):
        check_cuda_tensor(name, t)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name}: expected an integer tensor, got {t.dtype}")
    if node_index.ndim != 2:
        raise ValueError(f"node_index: expected shape (S, n), got {tuple(node_index.shape)}")
    s, n = node_index.shape
    if image_index.shape != (s,) or sizes.shape != (s,):
        raise ValueError(
            f"image_index, sizes: expected shape ({s},), "
            f"got {tuple(image_index.shape)} and {tuple(sizes.shape)}"
        )
    out = torch.empty(s, n, n, dtype=W.dtype, device=W.device)
    if s == 0 or n == 0 or W.shape[0] == 0:
        return out.zero_()
    smem = limits.gather_shared_memory(n)
    require_device("node_index", node_index, "gather", W.dtype, smem)
    Wc = W if W.stride(2) == 1 else W.contiguous()
    image_index, node_index, sizes = (t.to(torch.int64).contiguous() for t in (image_index, node_index, sizes))
    kernel = get_kernel("gather_subgraphs", W.dtype, W.device)
    for s0, s1 in batch_chunks(s):  # the segments ride on gridDim.y
        args = (
            Wc,
            i64(Wc.stride(0)),
            i64(Wc.stride(1)),
            i32(W.shape[0]),
            i32(W.shape[1]),
            image_index[s0:s1],
            node_index[s0:s1],
            sizes[s0:s1],
            i32(n),
            out[s0:s1],
        )
        launch(kernel, (cdiv(n, _TILE_ROWS), s1 - s0), (_THREADS,), args, device=W.device, shared_mem=smem)
    return out
