"""CUDA twin of ``diffcut_gpu.attention.probs.head_mean_attention`` (kernels in ``csrc/attention.cu``).

``out (+)= weight * mean_h softmax(scale * q_h k_h^T)`` without ever holding (B, heads, Nq, Nk):
``attn_stats`` computes each softmax row's maximum and normaliser, ``attn_accumulate`` recomputes the
score tiles and sums the probabilities of all heads in registers before one write of ``out``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import limits
from ._common import batch_chunks, cdiv, check_cuda_tensor, require_device
from .interop import f32, i32, i64, launch
from .loader import get_kernel

__all__ = ["MAX_HEAD_DIM", "record_attention_cuda"]

MAX_HEAD_DIM = 256
_THREADS = 128  # AT_THREADS
_TILE = 64  # AT_TILE
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def record_attention_cuda(
    q: Tensor,
    k: Tensor,
    scale: float,
    out: Tensor | None = None,
    accumulate: bool = True,
    *,
    weight: float = 1.0,
) -> Tensor:
    """Add (or write) the head-averaged attention probabilities of one layer into ``out``.

    Args:
        q: (B, heads, Nq, d) CUDA queries, float32 / float16 / bfloat16, unit stride along d.
        k: (B, heads, Nk, d) keys, same dtype.
        scale: logit scale (usually d ** -0.5).
        out: (B, Nq, Nk) float32 buffer with unit stride along Nk; None allocates one (then
            ``accumulate`` must be False).
        accumulate: add into ``out`` instead of overwriting it.
        weight: factor on the head mean (e.g. 1 / layers for a running mean over layers).

    Returns:
        ``out``. Asynchronous, no host sync. Rows of the added term sum to ``weight``.
    """
    check_cuda_tensor("q", q)
    check_cuda_tensor("k", k)
    if q.ndim != 4:
        raise ValueError(f"q: expected shape (B, heads, Nq, d), got {tuple(q.shape)}")
    if k.ndim != 4 or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"k: expected shape ({q.shape[0]}, {q.shape[1]}, Nk, {q.shape[3]}) to match q, "
            f"got {tuple(k.shape)}"
        )
    if q.dtype not in _DTYPES or k.dtype != q.dtype:
        raise ValueError(
            f"q, k: expected one dtype among float32, float16, bfloat16, got {q.dtype} and {k.dtype}"
        )
    b, h, nq, d = q.shape
    nk = k.shape[2]
    if d > MAX_HEAD_DIM:
        raise ValueError(f"q: expected head dim d <= {MAX_HEAD_DIM} for the CUDA backend, got {d}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale)):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
    if out is None:
        if accumulate:
            raise ValueError("out: expected a buffer when accumulate=True, got None")
        out = torch.empty(b, nq, nk, dtype=torch.float32, device=q.device)
    check_cuda_tensor("out", out)
    if (
        out.shape != (b, nq, nk)
        or out.dtype != torch.float32
        or out.device != q.device
        or (nk and out.stride(2) != 1)
    ):
        raise ValueError(
            f"out: expected a float32 ({b}, {nq}, {nk}) tensor on {q.device} with unit last stride, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    if b == 0 or nq == 0 or nk == 0:
        return out
    if h == 0 or d == 0:
        raise ValueError(f"q: expected at least one head and d >= 1, got shape {tuple(q.shape)}")
    if h > limits.MAX_GRID_YZ or cdiv(nq, _TILE) > limits.MAX_GRID_YZ:
        raise ValueError(
            f"q: expected at most {limits.MAX_GRID_YZ} heads and {limits.MAX_GRID_YZ * _TILE} queries for the "
            f"CUDA backend, got {h} and {nq}; use backend='torch'"
        )
    smem = limits.attention_shared_memory(d, q.dtype)
    require_device("q", q, "attention", q.dtype, smem)
    qc = q if q.stride(3) == 1 else q.contiguous()
    kc = k if k.stride(3) == 1 else k.contiguous()
    dk, dp = limits.attention_tile_geometry(d, q.dtype)
    sl2 = float(scale) * math.log2(math.e)
    mstat = torch.empty(b, h, nq, dtype=torch.float32, device=q.device)
    lstat = torch.empty(b, h, nq, dtype=torch.float32, device=q.device)
    strides = (qc.stride(0), qc.stride(1), qc.stride(2), kc.stride(0), kc.stride(1), kc.stride(2))
    shape = (i32(h), i32(nq), i32(nk), i32(d), i32(dk), i32(dp), f32(sl2))
    stats = get_kernel("attn_stats", q.dtype, q.device)
    acc = get_kernel("attn_accumulate", q.dtype, q.device)
    tail = (i64(out.stride(0)), i64(out.stride(1)), f32(float(weight) / h), i32(int(accumulate)))
    for b0, b1 in batch_chunks(b):  # the batch rides on gridDim.z
        qk = (qc[b0:b1], kc[b0:b1], *(i64(st) for st in strides), *shape)
        grid = (cdiv(nq, _TILE), h, b1 - b0)
        launch(stats, grid, (_THREADS,), (*qk, mstat[b0:b1], lstat[b0:b1]), device=q.device, shared_mem=smem)
        args = (*qk, mstat[b0:b1], lstat[b0:b1], out[b0:b1], *tail)
        grid = (cdiv(nk, _TILE), cdiv(nq, _TILE), b1 - b0)
        launch(acc, grid, (_THREADS,), args, device=q.device, shared_mem=smem)
    return out
