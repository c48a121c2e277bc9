"""Normalized-cut values and the exact sweep cut along a Fiedler vector.

NCut(S, S') = cut(S, S') / vol(S) + cut(S, S') / vol(S') (Shi & Malik 2000), with
cut = sum_{i in S, j in S'} W_ij and vol(S) = sum_{i in S} d_i.

The sweep cut scores **every** split of the nodes sorted by the Fiedler vector x (the first i+1 nodes
against the rest) in one O(N^2) pass: after sorting, cut_i = sum_{a <= i < b} W_ab obeys
cut_i = cut_{i-1} + upper_i - lower_i, where upper_i / lower_i are the sums of row i right / left of the
diagonal. A cumulative sum in float64 then gives all cut values at once, with no host round trip per
threshold (DiffCut tests 100 thresholds, each with a device-to-host sync).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batched_square, check_int, check_sizes, check_tensor, valid_mask
from ..kernels import dispatch


def _masked_graph(W: Tensor, valid: Tensor, dtype: torch.dtype) -> Tensor:
    """W in ``dtype`` with rows and columns outside the valid block set to 0."""
    w = W.to(dtype)
    both = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    return torch.where(both, w, torch.zeros((), dtype=dtype, device=W.device))


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with 0 / 0 -> 0 (a zero-volume side that also has zero cut costs nothing)."""
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def ncut_value(W: Tensor, mask: Tensor, sizes: Tensor | None = None) -> Tensor:
    """Shi-Malik NCut of the split (mask, ~mask) of each graph.

    Args:
        W: (B, N, N) symmetric non-negative graph (padded when ``sizes`` is given).
        mask: (B, N) bool, True for the nodes of S.
        sizes: optional (B,) valid sizes; entries beyond them belong to neither side.

    Returns:
        (B,) NCut values in float64. A split with an empty side is not a cut: its value is +inf.
    """
    check_batched_square("W", W, min_nodes=1)
    check_tensor("mask", mask)
    b, n, _ = W.shape
    if mask.shape != (b, n) or mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor of shape ({b}, {n}), got {mask.dtype} {tuple(mask.shape)}")
    check_sizes(sizes, b, n)
    valid = valid_mask(sizes, b, n, W.device)
    w = _masked_graph(W, valid, torch.float64)
    s = (mask & valid).to(torch.float64)
    t = (~mask & valid).to(torch.float64)
    deg = w.sum(-1)
    cut = torch.einsum("bi,bij,bj->b", s, w, t)
    vol_s = (s * deg).sum(-1)
    vol_t = (t * deg).sum(-1)
    value = _safe_ratio(cut, vol_s) + _safe_ratio(cut, vol_t)
    empty = (s.sum(-1) == 0) | (t.sum(-1) == 0)
    return torch.where(empty, torch.full_like(value, float("inf")), value)


def sweep_cut(
    W: Tensor, x: Tensor, sizes: Tensor | None = None, *, min_side: int = 1, backend: str | None = None
) -> tuple[Tensor, Tensor]:
    """Minimum NCut over all splits of the nodes sorted by ``x``.

    Args:
        W: (B, N, N) symmetric non-negative graph (padded when ``sizes`` is given; padding may hold
            anything, it is never read).
        x: (B, N) embedding, usually the Fiedler vector D^-1/2 v.
        sizes: optional (B,) valid sizes.
        min_side: smallest number of nodes either side may keep.
        backend: "auto", "torch" or "cuda" (None: ``$DIFFCUT_GPU_BACKEND``, else auto; see
            ``kernels.dispatch``).

    Returns:
        ncut: (B,) float64, the minimum NCut, +inf where no split satisfies ``min_side``.
        mask: (B, N) bool, True for S = the nodes with the smallest x up to the best split point
        (ties between split points go to the smallest S); False at padding.

    Raises:
        ValueError: W with NaN, Inf or negative entries in a valid block, or x with NaN or Inf at a
            valid node (a sort by NaN is no cut), or bad shapes / sizes / min_side.

    Example:
        >>> lam, x = fiedler(W)
        >>> ncut, mask = sweep_cut(W, x)
    """
    check_batched_square("W", W, min_nodes=1)
    check_tensor("x", x)
    b, n, _ = W.shape
    if x.shape != (b, n):
        raise ValueError(f"x: expected shape ({b}, {n}), got {tuple(x.shape)}")
    if x.device != W.device:
        raise ValueError(f"x: expected a tensor on {W.device} (W's device), got {x.device}")
    check_sizes(sizes, b, n)
    check_int("min_side", min_side, 1)
    dispatch.requested_backend(backend)  # an unknown backend fails even for an empty batch
    if b == 0:
        return W.new_zeros(0, dtype=torch.float64), torch.zeros(0, n, dtype=torch.bool, device=W.device)
    valid = valid_mask(sizes, b, n, W.device)
    _check_sweep_values(W, x, valid)
    return sweep_cut_unchecked(_masked_graph(W, valid, W.dtype) if sizes is not None else W, x, sizes,
                               min_side=min_side, backend=backend)


def _check_sweep_values(W: Tensor, x: Tensor, valid: Tensor) -> None:
    """Raise on NaN / Inf / negative entries of W in the valid blocks, or NaN / Inf of x at valid nodes."""
    block = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    bad_w = torch.where(block, ~torch.isfinite(W), False).any()
    negative = torch.where(block, W < 0, False).any()
    bad_x = torch.where(valid, ~torch.isfinite(x), False).any()
    flags = torch.stack([bad_w, negative, bad_x]).tolist()  # one host read for the three checks
    if flags[0]:
        raise ValueError("W: expected finite values in the valid block, got NaN or Inf entries")
    if flags[1]:
        raise ValueError("W: expected non-negative entries (a graph), got negative entries in the valid block")
    if flags[2]:
        raise ValueError("x: expected finite values at the valid nodes, got NaN or Inf (no order to sweep)")


def sweep_cut_unchecked(W: Tensor, x: Tensor, sizes: Tensor | None = None, *, min_side: int = 1,
                        backend: str | None = None, compute: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``sweep_cut`` without input checks or host reads, for graphs whose padding is exactly 0 (what the
    recursion gathers): the dispatch picks the CUDA kernel (which reads W in its stored dtype) or
    ``sweep_cut_clean`` (on ``compute``, W in the compute dtype, when the caller has it)."""
    impl = dispatch.select("sweep", W, backend)
    if impl == "cuda":
        return dispatch.implementation("sweep", "cuda")(W, x, sizes, min_side=min_side, check_values=False)
    return sweep_cut_clean(W if compute is None else compute, x, sizes, min_side=min_side)


SWEEP_CHUNK_ELEMENTS = 1 << 20
"""Largest (graphs x N x N) block of temporaries in ``_weight_before`` (4 MB in float32): large enough
to amortise per-op overhead, small enough that the temporaries are reused from the allocator instead of
being fresh (page-faulting) memory for every batch of large graphs."""


def _weight_before(w: Tensor, rank: Tensor) -> Tensor:
    """c[b, i] = sum_j w[b, i, j] [rank[b, j] < rank[b, i]], a few graphs at a time."""
    b, n, _ = w.shape
    per_chunk = max(1, SWEEP_CHUNK_ELEMENTS // (n * n))
    zero = torch.zeros((), dtype=w.dtype, device=w.device)
    parts = []
    for start in range(0, b, per_chunk):
        r = rank[start : start + per_chunk]
        earlier = r.unsqueeze(1) < r.unsqueeze(2)  # earlier[b, i, j]: j comes before i
        parts.append(torch.where(earlier, w[start : start + per_chunk], zero).sum(-1))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def sweep_cut_clean(W: Tensor, x: Tensor, sizes: Tensor | None = None, *, min_side: int = 1) -> tuple[Tensor, Tensor]:
    """``sweep_cut`` without input checks, for graphs whose padding is exactly 0 (what the recursion
    gathers). Same results; two passes over W instead of a sorted copy of it.

    With r the rank of each node along x, the weight from node i to the nodes before it is
    c_i = sum_j W_ij [r_j < r_i]; then upper_i - lower_i = d_i - W_ii - 2 c_i, and the cut values
    follow by a cumulative sum in rank order. Padding sorts last, so it never counts as "before".
    """
    b, n, _ = W.shape
    device = W.device
    valid = valid_mask(sizes, b, n, device)
    n_valid = valid.sum(-1)
    work = torch.float64 if W.dtype == torch.float64 else torch.float32
    w = W.to(work)

    # Sort valid nodes by x (stable, so equal entries keep index order); padding goes last.
    key = torch.where(valid, x.to(torch.float64), torch.full((), float("inf"), dtype=torch.float64, device=device))
    order = torch.sort(key, dim=-1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=device).expand(b, n))
    before = _weight_before(w, rank)
    deg = w.sum(-1)
    step = (deg - w.diagonal(dim1=-2, dim2=-1) - 2 * before).to(torch.float64)
    cut = torch.cumsum(step.gather(1, order), dim=-1).clamp_min(0)
    vol_s = torch.cumsum(deg.to(torch.float64).gather(1, order), dim=-1)
    vol_t = (vol_s[:, -1:] - vol_s).clamp_min(0)
    scores = _safe_ratio(cut, vol_s) + _safe_ratio(cut, vol_t)

    side = torch.arange(1, n + 1, device=device).unsqueeze(0)  # |S| for split point i
    allowed = (side >= min_side) & (n_valid.unsqueeze(1) - side >= min_side)
    scores = torch.where(allowed, scores, torch.full_like(scores, float("inf")))
    best = scores.argmin(dim=-1)
    ncut = scores.gather(1, best.unsqueeze(1)).squeeze(1)

    in_s_sorted = side <= (best + 1).unsqueeze(1)
    in_s_sorted &= torch.isfinite(ncut).unsqueeze(1)
    mask = torch.zeros(b, n, dtype=torch.bool, device=device).scatter(1, order, in_s_sorted)
    return ncut, mask & valid
