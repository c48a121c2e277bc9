"""Head-averaged self-attention probabilities, computed in query chunks.

``A = mean_h softmax(scale * Q_h K_h^T + mask)`` for queries ``Q`` and keys ``K`` of shape
``(B, heads, N, d)`` / ``(B, heads, M, d)``: one row-stochastic ``(B, N, M)`` matrix per image.
Queries are processed ``chunk_size`` at a time, so the ``(B, heads, N, M)`` score tensor is never
held whole: the peak extra memory is ``B * heads * chunk_size * M`` elements.

``head_mean_attention`` is the fast path (writes into a caller-owned buffer, no host round trip);
``head_mean_attention_ref`` is its float64 twin for tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import dispatch

__all__ = ["head_mean_attention", "head_mean_attention_ref"]


def _check_qk(query: Tensor, key: Tensor) -> None:
    if not isinstance(query, Tensor) or query.ndim != 4:
        got = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
        raise ValueError(f"query: expected a (B, heads, N, d) tensor, got {got}")
    if not isinstance(key, Tensor) or key.ndim != 4:
        got = tuple(key.shape) if isinstance(key, Tensor) else type(key).__name__
        raise ValueError(f"key: expected a (B, heads, M, d) tensor, got {got}")
    if key.shape[:2] != query.shape[:2] or key.shape[3] != query.shape[3]:
        raise ValueError(
            f"key: expected ({query.shape[0]}, {query.shape[1]}, M, {query.shape[3]}) to match query "
            f"(B, heads, M, d), got {tuple(key.shape)}"
        )


def _mask_rows(attn_mask: Tensor | None, start: int, stop: int, n: int) -> Tensor | None:
    """Rows ``start:stop`` of a mask broadcastable to ``(B, heads, N, M)`` (a 1-row mask broadcasts)."""
    if attn_mask is None or attn_mask.ndim < 2 or attn_mask.shape[-2] != n or n == 1:
        return attn_mask
    return attn_mask[..., start:stop, :]


def _apply_mask(scores: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return scores
    if mask.dtype == torch.bool:  # SDPA convention: True = take part in attention
        return scores.masked_fill(~mask, float("-inf"))
    return scores + mask.to(scores.dtype)


def head_mean_attention(
    query: Tensor,
    key: Tensor,
    *,
    scale: float,
    chunk_size: int | None = None,
    attn_mask: Tensor | None = None,
    out: Tensor | None = None,
    accumulate: bool = False,
    weight: float = 1.0,
) -> Tensor:
    """Head-averaged attention probabilities ``weight * mean_h softmax(scale * Q_h K_h^T + mask)``.

    Args:
        query: ``(B, heads, N, d)``.
        key: ``(B, heads, M, d)``.
        scale: logit scale (``attn.scale``, usually ``d ** -0.5``).
        chunk_size: queries per chunk; ``None`` processes all ``N`` at once.
        attn_mask: optional mask broadcastable to ``(B, heads, N, M)``; bool (True = keep) or additive.
        out: optional ``(B, N, M)`` buffer to write into (its dtype is the compute dtype).
        accumulate: add into ``out`` instead of overwriting it.
        weight: factor applied to the head mean (e.g. ``1 / layers`` for a running mean over layers).

    Returns:
        ``out`` (or a new ``(B, N, M)`` tensor), computed in the inputs' dtype but never below float32.
        Rows sum to ``weight`` (plus whatever ``out`` held when accumulating).

    Example:
        >>> q, k = torch.randn(2, 4, 64, 8), torch.randn(2, 4, 64, 8)
        >>> A = head_mean_attention(q, k, scale=8 ** -0.5, chunk_size=16)
        >>> torch.allclose(A.sum(-1), torch.ones(2, 64))
        True
    """
    _check_qk(query, key)
    B, heads, N, _ = query.shape
    M = key.shape[2]
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
    if out is None:
        if accumulate:
            raise ValueError("out: expected a buffer when accumulate=True, got None")
        out = torch.empty(B, N, M, device=query.device, dtype=torch.promote_types(query.dtype, torch.float32))
    elif out.shape != (B, N, M) or out.device != query.device or not out.is_floating_point():
        raise ValueError(
            f"out: expected a floating point ({B}, {N}, {M}) tensor on {query.device}, "
            f"got {tuple(out.shape)} {out.dtype} on {out.device}"
        )
    if attn_mask is None and out.dtype == torch.float32 and dispatch.select("attention", query) == "cuda":
        record_attention_cuda = dispatch.implementation("attention", "cuda")
        if not accumulate:
            out.zero_()
        return record_attention_cuda(query, key, scale, out, accumulate=True, weight=weight)
    dtype = torch.promote_types(out.dtype, torch.promote_types(query.dtype, torch.float32))
    key_t = key.to(dtype).transpose(-1, -2)  # (B, heads, d, M)
    factor = float(weight) / heads
    step = N if chunk_size is None else min(chunk_size, N)
    for start in range(0, N, step):
        stop = min(start + step, N)
        scores = torch.matmul(query[:, :, start:stop].to(dtype) * scale, key_t)  # (B, heads, c, M)
        scores = _apply_mask(scores, _mask_rows(attn_mask, start, stop, N))
        head_sum = scores.softmax(dim=-1).sum(dim=1)  # (B, c, M)
        if accumulate:
            out[:, start:stop].add_(head_sum, alpha=factor)
        else:
            out[:, start:stop].copy_(head_sum.mul_(factor))
    return out


def head_mean_attention_ref(
    query: Tensor, key: Tensor, *, scale: float, attn_mask: Tensor | None = None
) -> Tensor:
    """Float64 reference of :func:`head_mean_attention`: ``(B, N, M)``, no chunking, no buffers."""
    _check_qk(query, key)
    scores = torch.matmul(query.double(), key.double().transpose(-1, -2)) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask.double()
    return scores.softmax(dim=-1).mean(dim=1)
