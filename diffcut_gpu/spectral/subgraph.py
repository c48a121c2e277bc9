"""Induced sub-graphs of segments, packed into padded size buckets.

At each recursion level every active segment of every image becomes one dense graph: the rows and
columns of its tokens in the full graph. Segments of similar size share a padded bucket, so that one
batched eigen-solve handles all of them.

The bucket shapes are the only thing the host must know: ``width_histogram`` counts the segments per
width of the ladder on the device, the caller reads that small histogram (together with whatever else it
needs from the level, in one read), and ``buckets_from_histogram`` builds every bucket with device ops
of known shapes (sort, cumsum, gather), without another host read.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import valid_mask
from ..kernels import dispatch


@dataclass(frozen=True)
class Bucket:
    """Segments solved together: ``node_index`` (S, n) token ids padded with 0 beyond ``sizes``."""

    segment_ids: Tensor  # (S,) ids of the hierarchy nodes being split
    image_index: Tensor  # (S,) which graph of the batch each segment lives in
    node_index: Tensor  # (S, n) token ids of each segment, ascending, 0-padded
    sizes: Tensor  # (S,) number of tokens of each segment


def gather_subgraphs(W: Tensor, image_index: Tensor, node_index: Tensor, sizes: Tensor, *,
                     whole: bool | None = None, backend: str | None = None, sync: str = "auto") -> Tensor:
    """Dense induced sub-graphs: out[s] = W[image_index[s]][node_index[s]][:, node_index[s]].

    Args:
        W: (B, N, N) graphs.
        image_index: (S,) int64 graph of each segment.
        node_index: (S, n) int64 token ids, padded (any valid id) beyond ``sizes``.
        sizes: (S,) int64 valid sizes.
        whole: True promises that every segment is a whole graph (node_index 0 .. N-1, sizes N) and,
            when S == B, that image_index is 0 .. B-1; None finds out (host reads). The recursion knows
            it (its first level), and passes it.
        backend: "auto", "torch" or "cuda" (``kernels.dispatch``).
        sync: ``"host"`` allows the CPU path's per-segment reads of ``sizes``; ``"device"`` makes none;
            ``"auto"`` per device (``dispatch.sync_policy``).

    Returns:
        (S, n, n) in W's dtype, exactly 0 outside each valid block (W must be finite, as checked graphs are).
        When every segment is a whole graph, W itself or its selected graphs, without a copy of the
        blocks; callers only read the result.
    """
    s, n = node_index.shape
    b, big_n, _ = W.shape
    if whole is None:  # find out (host reads): whole graphs, and in batch order?
        whole = n == big_n and bool((sizes == big_n).all())
        if whole and not (s == b and torch.equal(image_index, torch.arange(b, device=W.device))):
            return W.index_select(0, image_index)
    if whole:
        return W if s == b else W.index_select(0, image_index)
    impl = dispatch.select("gather", W, backend, n=n, batch=s)
    if impl == "cuda":
        return dispatch.implementation("gather", "cuda")(W, image_index, node_index, sizes)
    if dispatch.sync_policy(W.device, sync) == "host":
        return _gather_each(W, image_index, node_index, sizes)
    flat_rows = (image_index * big_n).unsqueeze(1) + node_index  # row ids into W viewed as (B * N, N)
    rows = W.reshape(b * big_n, big_n).index_select(0, flat_rows.reshape(-1)).view(s, n, big_n)
    sub = rows.gather(2, node_index.unsqueeze(1).expand(s, n, n))
    valid = valid_mask(sizes, s, n, W.device).to(sub.dtype)
    return sub.mul_(valid.unsqueeze(-1) * valid.unsqueeze(-2))  # W is finite: padding becomes exactly 0


def _gather_each(W: Tensor, image_index: Tensor, node_index: Tensor, sizes: Tensor) -> Tensor:
    """CPU path of ``gather_subgraphs``: two ``index_select`` per segment into a zeroed output.

    The batched form above first copies S x n full rows of W (S n N elements, often tens of MB: fresh
    pages from the OS on every call) and then runs an element-wise gather, ~5 ns per element on CPU;
    contiguous row and column selects of one segment at a time are several times faster. Reads every
    size on the host (free on CPU; the "device" sync policy takes the batched form instead).
    """
    s, n = node_index.shape
    out = W.new_zeros(s, n, n)
    for i, (image, size) in enumerate(zip(image_index.tolist(), sizes.tolist())):
        ids = node_index[i, :size]
        out[i, :size, :size] = W[image].index_select(0, ids).index_select(1, ids)
    return out


BUCKET_STEPS = 4
"""Bucket widths per octave: widths grow by 2**(1/4) (~1.19x), so padding wastes at most ~41% of a
sub-graph's area (powers of two waste up to 4x) while a level still needs only a few batched calls."""


def bucket_widths(sizes: Tensor, n_max: int, min_width: int = 16) -> Tensor:
    """Padded width of each segment, on the device: the next width of the geometric ladder
    ``2**(k / BUCKET_STEPS)`` rounded up to a multiple of 8 (at least ``min_width``), capped at ``n_max``."""
    level = torch.ceil(torch.log2(sizes.clamp_min(1).double()) * BUCKET_STEPS - 1e-9)
    width = torch.ceil(torch.pow(2.0, level / BUCKET_STEPS) / 8) * 8
    return width.long().clamp(min=min_width, max=n_max).clamp_max(n_max)


@functools.lru_cache(maxsize=64)
def width_ladder(n_max: int, min_width: int = 16) -> tuple[int, ...]:
    """Every width ``bucket_widths`` can give for sizes 1 .. n_max, ascending (host arithmetic only:
    the widths of the ladder levels that some size reaches, clamped like ``bucket_widths``)."""
    top = math.ceil(math.log2(max(n_max, 1)) * BUCKET_STEPS - 1e-9)
    widths = {min(max(math.ceil(2.0 ** (k / BUCKET_STEPS) / 8) * 8, min_width), n_max) for k in range(top + 1)}
    return tuple(sorted(widths))


@functools.lru_cache(maxsize=64)
def _ladder_on(n_max: int, min_width: int, device: torch.device) -> Tensor:
    """``width_ladder`` as a tensor on ``device``, made once (a host-to-device copy waits for the stream)."""
    return torch.tensor(width_ladder(n_max, min_width), device=device)


def width_histogram(sizes: Tensor, n_max: int, weights: Tensor | None = None, min_width: int = 16) -> Tensor:
    """(len(width_ladder),) int64 on the device: how many segments (or the sum of ``weights``) fall in
    each width of the ladder. No host read; the caller reads it with whatever else it needs."""
    ladder = _ladder_on(n_max, min_width, sizes.device)
    slot = torch.searchsorted(ladder, bucket_widths(sizes, n_max, min_width))
    ones = torch.ones_like(slot) if weights is None else weights.to(torch.int64)
    return torch.zeros(ladder.numel(), dtype=torch.int64, device=sizes.device).scatter_add_(0, slot, ones)


def buckets_from_histogram(
    assignment: Tensor,
    segment_ids: Tensor,
    segment_image: Tensor,
    segment_size: Tensor,
    histogram: list[int],
    *,
    max_elements: int = 1 << 26,
    min_width: int = 16,
) -> list[Bucket]:
    """Group the tokens of the given segments into padded buckets, with no host read.

    Args:
        assignment: (B, N) int64 current segment id of every token.
        segment_ids: (K,) distinct ids of the segments to split (any order).
        segment_image: (M,) image of every segment id; M bounds the ids.
        segment_size: (M,) number of tokens of every segment id.
        histogram: ``width_histogram(segment_size[segment_ids], N).tolist()``, read by the caller:
            it fixes every bucket's shape. sum(histogram) == K.
        max_elements: cap on S * n * n per bucket, bounding the memory of one batched solve.
        min_width: smallest padded width (the ladder ``histogram`` was counted on).

    Returns:
        Buckets in ascending width; inside a bucket, segments in ascending id order (deterministic).
    """
    b, n = assignment.shape
    device = assignment.device
    k, m = segment_ids.numel(), segment_image.numel()
    if k == 0:
        return []
    ladder = width_ladder(n, min_width)
    sizes = segment_size[segment_ids]
    slot = torch.searchsorted(_ladder_on(n, min_width, device), bucket_widths(sizes, n, min_width))
    ordered = segment_ids[torch.sort(slot * m + segment_ids).indices]  # by (width, id)
    sizes = segment_size[ordered]
    # Position of every token's segment in that order (k when not being split); tokens sorted by
    # (position, token id) list each segment's members contiguously and in order.
    position = torch.full((m,), k, dtype=torch.long, device=device)
    position[ordered] = torch.arange(k, device=device)
    token = torch.arange(n, device=device).repeat(b)
    key = position[assignment.reshape(-1)] * n + token
    members = token[torch.sort(key).indices]
    starts = torch.cumsum(sizes, 0) - sizes

    buckets: list[Bucket] = []
    first = 0
    for width, count in zip(ladder, histogram):
        per_chunk = max(1, max_elements // (width * width))
        for lo in range(first, first + count, per_chunk):
            hi = min(lo + per_chunk, first + count)
            rank = torch.arange(width, device=device)
            at = (starts[lo:hi].unsqueeze(1) + rank).clamp_max(b * n - 1)
            node_index = torch.where(rank < sizes[lo:hi].unsqueeze(1), members[at], 0)
            ids = ordered[lo:hi]
            buckets.append(Bucket(ids, segment_image[ids], node_index, sizes[lo:hi]))
        first += count
    return buckets


def make_buckets(
    assignment: Tensor,
    segment_ids: Tensor,
    segment_image: Tensor,
    *,
    max_elements: int = 1 << 26,
    min_width: int = 16,
) -> list[Bucket]:
    """Group the tokens of the given segments into padded buckets (one host read, for the shapes).

    Args:
        assignment: (B, N) int64 current segment id of every token.
        segment_ids: (K,) ids of the segments to split at this level.
        segment_image: (M,) image of every segment id (indexable by ``segment_ids``).
        max_elements: cap on S * n * n per bucket, bounding the memory of one batched solve.
        min_width: smallest padded width.

    Returns:
        Buckets in ascending width; inside a bucket, segments keep ascending id order (deterministic).
    """
    n = assignment.shape[1]
    m = segment_image.shape[0]
    size = torch.zeros(m, dtype=torch.long, device=assignment.device)
    size.scatter_add_(0, assignment.reshape(-1), torch.ones_like(assignment.reshape(-1)))
    histogram = width_histogram(size[segment_ids], n, min_width=min_width).tolist()
    return buckets_from_histogram(assignment, segment_ids, segment_image, size, histogram,
                                  max_elements=max_elements, min_width=min_width)
