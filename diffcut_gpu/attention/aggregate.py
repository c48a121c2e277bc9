"""Bring attention transition matrices recorded at several token grids onto one grid.

A self-attention map ``P`` of a layer with an ``h x w`` token grid is a row-stochastic ``(B, n, n)``
matrix, ``n = h * w``: row ``i`` is the distribution over keys seen from query ``i``. Resampling it to
an ``H x W`` grid treats the two dimensions differently:

* keys (columns) are a probability *image* on the grid: each row is resized as a ``(h, w)`` image,
  linear interpolation when the grid grows, area averaging when it shrinks, then renormalised;
* queries (rows) are *who is looking*: a finer target query copies the row of the source query that
  contains it (nearest), a coarser target query averages the rows of the source queries it covers.

Both steps are separable per axis and map non-negative rows to non-negative rows, so renormalising
keys and averaging rows keeps the result row-stochastic. A weighted sum of row-stochastic maps with
normalised weights is again row-stochastic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["aggregate_attention", "resample_matrix", "resize_transition"]

Grid = tuple[int, int]


def resample_matrix(src: int, dst: int, mode: str, *, device=None, dtype=torch.float32) -> Tensor:
    """1-D resampling operator ``(dst, src)``: ``y = M @ x`` resizes a signal of length ``src``.

    ``mode``:
      * ``"linear"``: linear interpolation with half-pixel centres (``align_corners=False``, the
        convention of ``F.interpolate(mode="bilinear")``); the source coordinate of target ``i`` is
        ``max((i + 0.5) * src / dst - 0.5, 0)``.
      * ``"area"``: target ``i`` averages source cells ``[floor(i*src/dst), ceil((i+1)*src/dst))``
        (the convention of ``F.adaptive_avg_pool1d``).
      * ``"nearest"``: target ``i`` copies source ``floor(i * src / dst)``.

    Built with device ops only (no host round trip). Every row sums to 1.
    """
    if src < 1 or dst < 1:
        raise ValueError(f"src, dst: expected positive lengths, got src={src}, dst={dst}")
    i = torch.arange(dst, device=device)
    j = torch.arange(src, device=device)
    if mode == "linear":
        x = ((i.to(torch.float64) + 0.5) * (src / dst) - 0.5).clamp_min(0.0)
        i0 = x.floor().to(torch.long).clamp_max(src - 1)
        i1 = (i0 + 1).clamp_max(src - 1)
        lam = (x - i0.to(torch.float64)).clamp(0.0, 1.0)
        m = (j[None, :] == i0[:, None]) * (1.0 - lam)[:, None] + (j[None, :] == i1[:, None]) * lam[:, None]
        return m.to(dtype)
    if mode == "area":
        start = (i * src) // dst
        end = ((i + 1) * src + dst - 1) // dst
        inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
        return (inside.to(torch.float64) / (end - start).to(torch.float64)[:, None]).to(dtype)
    if mode == "nearest":
        return (j[None, :] == ((i * src) // dst)[:, None]).to(dtype)
    raise ValueError(f"mode: expected 'linear', 'area' or 'nearest', got {mode!r}")


def _nearest_index(src: int, dst: int, device) -> Tensor:
    """Index form of ``resample_matrix(src, dst, "nearest")``: ``(dst,)`` source positions."""
    return (torch.arange(dst, device=device) * src) // dst


def _check_grid(name: str, grid: Sequence[int]) -> Grid:
    if len(grid) != 2 or any(int(g) < 1 for g in grid):
        raise ValueError(f"{name}: expected a (h, w) pair of positive ints, got {tuple(grid)}")
    return int(grid[0]), int(grid[1])


def _check_map(name: str, P: Tensor, grid: Grid) -> None:
    n = grid[0] * grid[1]
    if not isinstance(P, Tensor) or P.ndim != 3 or P.shape[1] != n or P.shape[2] != n:
        shape = tuple(P.shape) if isinstance(P, Tensor) else type(P).__name__
        raise ValueError(f"{name}: expected a (B, {n}, {n}) tensor for grid {grid}, got {shape}")
    if not P.is_floating_point():
        raise ValueError(f"{name}: expected a floating point tensor, got {P.dtype}")


def resize_transition(P: Tensor, src: Sequence[int], dst: Sequence[int]) -> Tensor:
    """Resample a row-stochastic attention map from grid ``src`` to grid ``dst``.

    Args:
        P: ``(B, h*w, h*w)`` row-stochastic map on the ``src = (h, w)`` token grid (row-major tokens).
        src: source grid ``(h, w)``.
        dst: target grid ``(H, W)``.

    Returns:
        ``(B, H*W, H*W)`` row-stochastic map, computed in ``P``'s dtype but never below float32.
        Always a new tensor (never a view of ``P``).

    Keys are resized per axis (linear up, area down) and renormalised; queries are resized per axis
    (nearest up, area down).

    Example:
        >>> P = torch.softmax(torch.randn(2, 16, 16), -1)
        >>> resize_transition(P, (4, 4), (8, 8)).shape
        torch.Size([2, 64, 64])
    """
    src, dst = _check_grid("src", src), _check_grid("dst", dst)
    _check_map("P", P, src)
    dtype = torch.promote_types(P.dtype, torch.float32)
    (h, w), (H, W) = src, dst
    B = P.shape[0]
    x = P.to(dtype).reshape(B, h, w, h, w)  # (B, qy, qx, ky, kx)
    # Keys: per-axis linear maps, then renormalise each row (also on the same grid, which absorbs
    # the rounding drift of half-precision inputs).
    if (H, W) != (h, w):
        ky = resample_matrix(h, H, "linear" if H >= h else "area", device=P.device, dtype=dtype)
        kx = resample_matrix(w, W, "linear" if W >= w else "area", device=P.device, dtype=dtype)
        x = torch.einsum("bpqhw,Hh,Ww->bpqHW", x, ky, kx)
    x = x / x.sum(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    # Queries: nearest copy when growing (a gather), area average when shrinking (a matmul). Both
    # allocate, so the result never aliases P.
    if H >= h:
        x = x.index_select(1, _nearest_index(h, H, P.device))
    else:
        x = torch.einsum("Hh,bhwyx->bHwyx", resample_matrix(h, H, "area", device=P.device, dtype=dtype), x)
    if W >= w:
        x = x.index_select(2, _nearest_index(w, W, P.device))
    else:
        x = torch.einsum("Ww,bhwyx->bhWyx", resample_matrix(w, W, "area", device=P.device, dtype=dtype), x)
    return x.reshape(B, H * W, H * W)


def aggregate_attention(
    maps: Sequence[Tensor],
    grids: Sequence[Sequence[int]],
    target: Sequence[int],
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Weighted mean of attention maps from several token grids, on the ``target`` grid.

    Args:
        maps: ``k`` row-stochastic maps, map ``i`` of shape ``(B, n_i, n_i)`` with ``n_i = h_i * w_i``.
        grids: the ``k`` grids ``(h_i, w_i)``.
        target: output grid ``(H, W)``.
        weights: ``k`` non-negative weights (normalised to sum 1 here); ``None`` means equal weights.

    Returns:
        ``(B, H*W, H*W)`` row-stochastic map ``sum_i w_i * resize(P_i) / sum_i w_i`` (float32 or wider).

    Example:
        >>> P16 = torch.softmax(torch.randn(1, 256, 256), -1)
        >>> P8 = torch.softmax(torch.randn(1, 64, 64), -1)
        >>> aggregate_attention([P16, P8], [(16, 16), (8, 8)], (8, 8), weights=[1.0, 3.0]).shape
        torch.Size([1, 64, 64])
    """
    if len(maps) == 0:
        raise ValueError("maps: expected at least one attention map, got an empty sequence")
    if len(grids) != len(maps):
        raise ValueError(f"grids: expected one grid per map ({len(maps)}), got {len(grids)}")
    target = _check_grid("target", target)
    if weights is None:
        weights = [1.0] * len(maps)
    weights = [float(w) for w in weights]
    if len(weights) != len(maps):
        raise ValueError(f"weights: expected one weight per map ({len(maps)}), got {len(weights)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights: expected non-negative weights with a positive sum, got {weights}")
    batch = {int(P.shape[0]) for P in maps if isinstance(P, Tensor) and P.ndim == 3}
    if len(batch) > 1:
        raise ValueError(f"maps: expected one batch size for all maps, got {sorted(batch)}")
    total = sum(weights)
    out: Tensor | None = None
    for i, (P, g, w) in enumerate(zip(maps, grids, weights)):
        g = _check_grid(f"grids[{i}]", g)
        _check_map(f"maps[{i}]", P, g)
        if w == 0:
            continue
        R = resize_transition(P, g, target)
        if out is None:
            out = R.mul_(w / total)
        else:
            out.add_(R.to(out.dtype), alpha=w / total)
    assert out is not None  # a positive total guarantees one non-zero weight
    return out
