"""Shared pieces of the upsamplers: input checks, label compaction, chunked bilinear argmax."""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_MAX_ELEMENTS = 1 << 24  # largest temporary, in elements, a chunked step may allocate


def check_labels(labels: Tensor, arg: str = "labels") -> Tensor:
    """``labels`` must be an integer ``(B, h, w)`` tensor; returns it as int64."""
    if not isinstance(labels, Tensor) or labels.ndim != 3 or labels.numel() == 0:
        got = f"shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{arg}: expected a non-empty integer tensor (B, h, w), got {got}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{arg}: expected an integer dtype (int64), got {labels.dtype}")
    return labels.long()


def check_size(output_size, arg: str = "output_size") -> tuple[int, int]:
    """``output_size`` must be ``(H, W)`` positive ints (an int means a square)."""
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        output_size = (output_size, output_size)
    if (
        isinstance(output_size, (tuple, list, torch.Size))
        and len(output_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in output_size)
    ):
        return int(output_size[0]), int(output_size[1])
    raise ValueError(f"{arg}: expected (H, W) positive ints, got {output_size!r}")


def check_max_elements(max_elements: int) -> int:
    if not isinstance(max_elements, int) or isinstance(max_elements, bool) or max_elements <= 0:
        raise ValueError(f"max_elements: expected a positive int, got {max_elements!r}")
    return max_elements


def compact_labels(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Map arbitrary integer labels to ``0 .. K-1`` over the whole batch.

    Returns ``(ids, values)``: ``ids`` has the shape of ``labels`` and ``values: (K,)`` sorted, with
    ``values[ids] == labels``.
    """
    values, ids = torch.unique(labels, sorted=True, return_inverse=True)
    return ids.view_as(labels), values


def bilinear_taps(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype):
    """1-D bilinear resampling taps, as ``F.interpolate(mode="bilinear", align_corners=False)``.

    Output ``o`` reads ``(1 - t) * x[i0] + t * x[i1]`` with source ``(o + 0.5) * n_in / n_out - 0.5``
    clamped to ``[0, n_in - 1]``. Returns ``i0, i1`` (int64) and ``t`` (``dtype``), each ``(n_out,)``.
    """
    src = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    src = src.clamp(min=0.0, max=n_in - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    t = (src - i0).to(dtype)
    return i0, i1, t


def upsample_argmax(
    scores: Tensor,
    output_size: tuple[int, int],
    valid: Tensor | None = None,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """Per-pixel ``argmax_k`` of the bilinearly upsampled ``scores``, chunked over output rows.

    Args:
        scores: ``(B, K, h, w)`` float scores on the token grid.
        output_size: ``(H, W)``.
        valid: optional ``(B, K)`` bool; ``False`` entries can never win.
        max_elements: bound on the ``(B, K, rows, W)`` slab held at once.

    Returns:
        ``(B, H, W)`` int64 in ``[0, K)``; equal to ``F.interpolate(scores, (H, W), mode="bilinear")
        .argmax(1)`` without ever holding ``(B, K, H, W)``.
    """
    batch, k, h, w = scores.shape
    height, width = output_size
    r0, r1, rt = bilinear_taps(h, height, scores.device, scores.dtype)
    c0, c1, ct = bilinear_taps(w, width, scores.device, scores.dtype)
    cols = torch.lerp(scores[..., c0], scores[..., c1], ct)  # (B, K, h, W)
    out = torch.empty(batch, height, width, dtype=torch.long, device=scores.device)
    rows = max(1, min(height, max_elements // max(1, batch * k * width)))
    mask = None if valid is None else ~valid.view(batch, k, 1, 1)
    for start in range(0, height, rows):
        sl = slice(start, min(height, start + rows))
        slab = torch.lerp(cols[:, :, r0[sl]], cols[:, :, r1[sl]], rt[sl].view(-1, 1))  # (B, K, rows, W)
        if mask is not None:
            slab = slab.masked_fill(mask, -math.inf)
        out[:, sl] = slab.argmax(dim=1)
    return out
