"""Induced sub-graphs of segments, packed into padded size buckets.

At each recursion level every active segment of every image becomes one dense graph: the rows and
columns of its tokens in the full graph. Segments of similar size share a padded bucket, so that one
batched eigen-solve handles all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..kernels.dispatch import select_backend


@dataclass(frozen=True)
class Bucket:
    """Segments solved together: ``node_index`` (S, n) token ids padded with 0 beyond ``sizes``."""

    segment_ids: Tensor  # (S,) ids of the hierarchy nodes being split
    image_index: Tensor  # (S,) which graph of the batch each segment lives in
    node_index: Tensor  # (S, n) token ids of each segment, ascending, 0-padded
    sizes: Tensor  # (S,) number of tokens of each segment


def gather_subgraphs(W: Tensor, image_index: Tensor, node_index: Tensor, sizes: Tensor) -> Tensor:
    """Dense induced sub-graphs: out[s] = W[image_index[s]][node_index[s]][:, node_index[s]].

    Args:
        W: (B, N, N) graphs.
        image_index: (S,) int64 graph of each segment.
        node_index: (S, n) int64 token ids, padded (any valid id) beyond ``sizes``.
        sizes: (S,) int64 valid sizes.

    Returns:
        (S, n, n) in W's dtype, exactly 0 outside each valid block (W must be finite, as checked graphs are).
        When every segment is a whole graph (the first level of the recursion), W itself or its selected
        graphs, without a copy of the blocks; callers only read the result.
    """
    s, n = node_index.shape
    b, big_n, _ = W.shape
    if n == big_n and bool((sizes == big_n).all()):  # whole graphs: node_index is 0 .. N-1 for each
        if s == b and torch.equal(image_index, torch.arange(b, device=W.device)):
            return W
        return W.index_select(0, image_index)
    if select_backend(W) == "cuda":
        from ..kernels import gather_subgraphs_cuda

        return gather_subgraphs_cuda(W, image_index, node_index, sizes)
    if W.device.type == "cpu":
        return _gather_each(W, image_index, node_index, sizes)
    flat_rows = (image_index * big_n).unsqueeze(1) + node_index  # row ids into W viewed as (B * N, N)
    rows = W.reshape(b * big_n, big_n).index_select(0, flat_rows.reshape(-1)).view(s, n, big_n)
    sub = rows.gather(2, node_index.unsqueeze(1).expand(s, n, n))
    valid = (torch.arange(n, device=W.device).unsqueeze(0) < sizes.unsqueeze(1)).to(sub.dtype)
    return sub.mul_(valid.unsqueeze(-1) * valid.unsqueeze(-2))  # W is finite: padding becomes exactly 0


def _gather_each(W: Tensor, image_index: Tensor, node_index: Tensor, sizes: Tensor) -> Tensor:
    """CPU path of ``gather_subgraphs``: two ``index_select`` per segment into a zeroed output.

    The batched form above first copies S x n full rows of W (S n N elements, often tens of MB: fresh
    pages from the OS on every call) and then runs an element-wise gather, ~5 ns per element on CPU;
    contiguous row and column selects of one segment at a time are several times faster.
    """
    s, n = node_index.shape
    out = W.new_zeros(s, n, n)
    for i, (image, size) in enumerate(zip(image_index, sizes)):  # CPU tensors: scalar loop bounds
        k = int(size)
        ids = node_index[i, :k]
        out[i, :k, :k] = W[image].index_select(0, ids).index_select(1, ids)
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


def make_buckets(
    assignment: Tensor,
    segment_ids: Tensor,
    segment_image: Tensor,
    *,
    max_elements: int = 1 << 26,
    min_width: int = 16,
) -> list[Bucket]:
    """Group the tokens of the given segments into padded buckets.

    Args:
        assignment: (B, N) int64 current segment id of every token.
        segment_ids: (K,) ids of the segments to split at this level.
        segment_image: (M,) image of every segment id (indexable by ``segment_ids``).
        max_elements: cap on S * n * n per bucket, bounding the memory of one batched solve.
        min_width: smallest padded width.

    Returns:
        Buckets in ascending width; inside a bucket, segments keep ascending id order (deterministic).
    """
    b, n = assignment.shape
    device = assignment.device
    if segment_ids.numel() == 0:
        return []
    segment_ids = torch.sort(segment_ids).values
    # Position of each segment id in the sorted list, for every token (-1 when not being split).
    lookup = torch.full((int(segment_image.shape[0]),), -1, dtype=torch.long, device=device)
    lookup[segment_ids] = torch.arange(segment_ids.numel(), device=device)
    slot = lookup[assignment.reshape(-1)]
    active = slot >= 0
    tokens = torch.arange(b * n, device=device)[active] % n
    slot = slot[active]
    # Sort tokens by (slot, token id) to list each segment's members contiguously and in order.
    order = torch.argsort(slot * n + tokens)
    tokens, slot = tokens[order], slot[order]
    counts = torch.bincount(slot, minlength=segment_ids.numel())
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(tokens.numel(), device=device) - starts[slot]

    widths = bucket_widths(counts, n, min_width)
    buckets: list[Bucket] = []
    for width in (int(w) for w in torch.unique(widths)):  # a handful of scalars: the bucket shapes
        members = torch.nonzero(widths == width).squeeze(1)
        per_chunk = max(1, max_elements // (width * width))
        for chunk in members.split(per_chunk):
            local = torch.full((segment_ids.numel(),), -1, dtype=torch.long, device=device)
            local[chunk] = torch.arange(chunk.numel(), device=device)
            pick = local[slot] >= 0
            node_index = torch.zeros(chunk.numel(), width, dtype=torch.long, device=device)
            node_index[local[slot[pick]], rank[pick]] = tokens[pick]
            ids = segment_ids[chunk]
            buckets.append(Bucket(ids, segment_image[ids], node_index, counts[chunk]))
    return buckets
