"""CUDA twin of ``diffcut_gpu.attention.probs.head_mean_attention`` (kernels in ``csrc/attention.cu``).

``out (+)= weight * mean_h softmax(scale * q_h k_h^T)`` without ever holding (B, heads, Nq, Nk):
``attn_stats`` computes each softmax row's maximum and normaliser, ``attn_accumulate`` recomputes the
score tiles and sums the probabilities of all heads in registers before one write of ``out``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import cdiv, check_cuda_tensor
from .interop import f32, i32, i64, launch
from .loader import get_kernel

__all__ = ["MAX_HEAD_DIM", "record_attention_cuda"]

MAX_HEAD_DIM = 256
_THREADS = 128  # AT_THREADS
_TILE = 64  # AT_TILE
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _tile_geometry(d: int, dtype: torch.dtype) -> tuple[int, int]:
    """(dk, dp): head dim padded to the mma K step (16-bit inputs) and the shared-memory row pitch."""
    if dtype == torch.float32:
        return d, d + 1 - (d & 1)  # odd pitch: conflict-free column reads
    dk = cdiv(d, 16) * 16
    return dk, dk + 8  # +16 bytes: fragment loads of 8 rows hit 8 different bank groups


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
    qc = q if q.stride(3) == 1 else q.contiguous()
    kc = k if k.stride(3) == 1 else k.contiguous()
    dk, dp = _tile_geometry(d, q.dtype)
    smem = 2 * _TILE * dp * q.element_size()
    sl2 = float(scale) * math.log2(math.e)
    mstat = torch.empty(b, h, nq, dtype=torch.float32, device=q.device)
    lstat = torch.empty(b, h, nq, dtype=torch.float32, device=q.device)
    qk = (
        qc,
        kc,
        i64(qc.stride(0)),
        i64(qc.stride(1)),
        i64(qc.stride(2)),
        i64(kc.stride(0)),
        i64(kc.stride(1)),
        i64(kc.stride(2)),
        i32(h),
        i32(nq),
        i32(nk),
        i32(d),
        i32(dk),
        i32(dp),
        f32(sl2),
    )
    stats = get_kernel("attn_stats", q.dtype, q.device)
    launch(stats, (cdiv(nq, _TILE), h, b), (_THREADS,), (*qk, mstat, lstat), device=q.device, shared_mem=smem)
    acc = get_kernel("attn_accumulate", q.dtype, q.device)
    args = (
        *qk,
        mstat,
        lstat,
        out,
        i64(out.stride(0)),
        i64(out.stride(1)),
        f32(float(weight) / h),
        i32(int(accumulate)),
    )
    launch(acc, (cdiv(nk, _TILE), cdiv(nq, _TILE), b), (_THREADS,), args, device=q.device, shared_mem=smem)
    return out
