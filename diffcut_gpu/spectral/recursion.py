"""Recursive two-way Normalized Cuts, level-synchronous and batched over images and segments.

Level by level, every segment of every image that may still split becomes an induced sub-graph; the
sub-graphs are packed into padded size buckets and each bucket is solved by one batched Fiedler call
(dense ``eigh`` for narrow buckets, Lanczos for wide ones) and one batched sweep cut. The recursion
records every candidate split in a ``Segmentation`` hierarchy; the threshold policy then decides which
splits to keep. A constant threshold prunes during the recursion (a rejected node is not expanded); a
dynamic one explores the full candidate hierarchy first.

The recursion stays on the device: per level the host reads one small tensor (how many splits were
accepted, the unconverged count, and how many sub-graphs of each width the next level has), and one more
when a float32 Lanczos solve may need its float64 rescue (how many graphs); every other shape follows
from those numbers. Under the ``"device"`` sync policy (the default on GPUs) nothing else is read: the
Lanczos solves run fixed step blocks, the gather and the sweep read no sizes.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._checks import check_graph, check_int, valid_mask
from .._types import LanczosParams
from ..kernels import dispatch
from .fiedler import rescue_stuck, solve_fiedler_deferred
from .hierarchy import Segmentation
from .subgraph import buckets_from_histogram, gather_subgraphs, width_histogram, width_ladder
from .sweep import sweep_cut_unchecked
from .thresholds import ThresholdPolicy, make_policy


@torch.compiler.disable
def recursive_ncut(
    W: Tensor,
    *,
    threshold: float | str | ThresholdPolicy = 0.5,
    min_size: int = 4,
    max_depth: int = 8,
    full_hierarchy: bool | None = None,
    method: str = "auto",
    tol: float | None = None,
    max_bucket_elements: int = 1 << 26,
    backend: str | None = None,
    params: LanczosParams | None = None,
) -> Segmentation:
    """Partition each graph by recursive two-way NCut.

    Args:
        W: (B, N, N) symmetric non-negative graphs (e.g. ``reversibilize(P)`` or ``cosine_affinity(F)``).
        threshold: constant tau (split while NCut < tau), "dynamic" (the default hyperparameter-free
            policy), a policy name ("null", "otsu", "gap") or a ``ThresholdPolicy``.
        min_size: fewest tokens a segment may have; a segment splits only into two parts of at least this.
        max_depth: most levels of splitting (at most 2**max_depth segments).
        full_hierarchy: explore every candidate split regardless of the threshold, so that ``labels_at``
            works at any tau. None: only when the policy needs it.
        method: eigen-solver, "auto", "lanczos" or "eigh" (see ``fiedler``).
        tol: residual tolerance of the eigen-solver; None: ``params.tol`` (default 1e-5).
        max_bucket_elements: bound on S * n * n of one batched solve (memory of a bucket).
        backend: "auto", "torch" or "cuda" for the gather, Lanczos and sweep of every level (None:
            ``$DIFFCUT_GPU_BACKEND``, else auto; see ``kernels.dispatch``).
        params: Lanczos settings (``LanczosParams``), including the sync policy ("auto": host-read early
            exit on CPU, fixed step blocks without host reads on a GPU).

    Returns:
        ``Segmentation`` with ``labels`` (B, N) int64 and the hierarchy.

    Runs outside autograd and autocast (the solver needs float32 or better) and outside ``torch.compile``
    (one graph break: its shapes depend on the data).

    Example:
        >>> W = reversibilize(attention)           # attention: (B, N, N) row-stochastic
        >>> seg = recursive_ncut(W, threshold="dynamic")
        >>> seg.labels.shape, seg.labels_at(0.3).shape
    """
    check_graph("W", W)
    check_int("min_size", min_size, 1)
    check_int("max_depth", max_depth, 0)
    if params is not None and not isinstance(params, LanczosParams):
        raise TypeError(f"params: expected a LanczosParams or None, got {type(params).__name__}")
    dispatch.requested_backend(backend)  # an unknown backend fails here, before any work
    params = (params or LanczosParams()).with_(tol=tol)
    params = params.with_(sync=dispatch.sync_policy(W.device, params.sync))
    policy = make_policy(threshold)
    explore_all = policy.needs_full_hierarchy if full_hierarchy is None else bool(full_hierarchy)
    if policy.needs_full_hierarchy and not explore_all:
        raise ValueError(f"full_hierarchy: {policy!r} reads the full candidate hierarchy, got full_hierarchy=False")
    with torch.no_grad(), torch.autocast(W.device.type, enabled=False):
        return _recursive_ncut(W.detach(), policy, explore_all, min_size, max_depth, method, params,
                               max_bucket_elements, backend)


def _recursive_ncut(W: Tensor, policy: ThresholdPolicy, explore_all: bool, min_size: int, max_depth: int,
                    method: str, params: LanczosParams, max_bucket_elements: int,
                    backend: str | None) -> Segmentation:
    """The level loop of ``recursive_ncut`` (inputs checked)."""
    b, n, _ = W.shape
    device = W.device
    bound = torch.full((b,), float("inf"), dtype=torch.float64, device=device)
    if not explore_all:
        probe = Segmentation(*_empty_hierarchy(b, n, device))
        bound = policy(probe).to(torch.float64)

    node_image = torch.arange(b, device=device)
    parent = torch.full((b,), -1, dtype=torch.long, device=device)
    level = torch.zeros(b, dtype=torch.long, device=device)
    size = torch.full((b,), n, dtype=torch.long, device=device)
    ncut = torch.full((b,), float("inf"), dtype=torch.float64, device=device)
    eigenvalue = torch.full((b,), float("inf"), dtype=torch.float64, device=device)
    children = torch.full((b, 2), -1, dtype=torch.long, device=device)
    assignment = node_image.unsqueeze(1).expand(b, n).contiguous()
    path = [assignment]

    # Host-side state: the node count, and the next level's sub-graphs per width of the ladder.
    nodes = b
    ladder = width_ladder(n)
    histogram = [0] * len(ladder)
    if n >= 2 * min_size:
        histogram[-1] = b  # every root, at full width (the ladder ends at n)
    frontier = node_image

    work = torch.float64 if W.dtype == torch.float64 else torch.float32
    unconverged = 0
    for depth in range(max_depth):
        if sum(histogram) == 0:
            break
        buckets = buckets_from_histogram(assignment, frontier, node_image, size, histogram,
                                         max_elements=max_bucket_elements)
        solved = []
        for bucket in buckets:
            # Sub-graphs of a checked graph, with exactly-zero padding: the unchecked solvers apply.
            stored = gather_subgraphs(W, bucket.image_index, bucket.node_index, bucket.sizes,
                                      whole=depth == 0, backend=backend, sync=params.sync)
            sub = stored.to(work)
            info, due = solve_fiedler_deferred(sub, method=method, sizes=bucket.sizes, params=params,
                                               stored=stored, backend=backend)
            solved.append((bucket, stored, sub, info, due))
        solved = _rescue(solved, params)

        ids, cuts, lams, lows, slots = [], [], [], [], []
        stuck = torch.zeros((), dtype=torch.long, device=device)
        for bucket, stored, sub, info, _ in solved:
            stuck = stuck + (~info.converged).sum()
            cut, mask = sweep_cut_unchecked(stored, info.x, bucket.sizes, min_side=min_size, backend=backend,
                                            compute=sub)
            width = bucket.node_index.shape[1]
            ids.append(bucket.segment_ids)
            cuts.append(cut)
            lams.append(info.lam.to(torch.float64))
            lows.append(mask.sum(-1))
            # Every padded member slot: its flat token (image * n + id), segment, side and validity.
            slots.append((
                (bucket.image_index.unsqueeze(1) * n + bucket.node_index).reshape(-1),
                bucket.segment_ids.unsqueeze(1).expand(-1, width).reshape(-1),
                mask.reshape(-1),
                valid_mask(bucket.sizes, bucket.sizes.shape[0], width, device).reshape(-1),
            ))
        ids, cuts, low = torch.cat(ids), torch.cat(cuts), torch.cat(lows)
        ncut[ids] = cuts
        eigenvalue[ids] = torch.cat(lams)
        split = torch.isfinite(cuts) & (cuts < bound[node_image[ids]])

        # The one read of the level: accepted splits, unconverged solves, next level's widths.
        high = size[ids] - low
        if depth + 1 < max_depth:
            grows = width_histogram(low, n, split & (low >= 2 * min_size))
            grows = grows + width_histogram(high, n, split & (high >= 2 * min_size))
        else:
            grows = torch.zeros(len(ladder), dtype=torch.long, device=device)
        read = torch.cat([split.sum().view(1), stuck.view(1), grows]).tolist()
        k, histogram = read[0], read[2:]
        unconverged += read[1]
        if k == 0:
            break

        # Two children per accepted split, numbered in id order: m + 2i (low side of x) and m + 2i + 1.
        m = nodes
        accepted = torch.zeros(m, dtype=torch.bool, device=device).scatter(0, ids, split)
        splitting = torch.sort((~accepted).to(torch.uint8), stable=True).indices[:k]  # accepted ids, ascending
        child_of = torch.where(accepted, m + 2 * (torch.cumsum(accepted, 0) - 1), -1)
        new_ids = m + torch.arange(2 * k, device=device)
        children[splitting] = new_ids.view(k, 2)

        tokens, seg_of_slot, low_side, valid = (torch.cat(part) for part in zip(*slots))
        first_child = child_of[seg_of_slot]
        target = torch.where(valid & (first_child >= 0), tokens, b * n)  # others land in a spare slot
        flat = torch.cat([assignment.reshape(-1), assignment.new_zeros(1)])
        assignment = flat.scatter_(0, target, first_child + (~low_side).long())[: b * n].view(b, n)
        path.append(assignment)

        low_of = torch.zeros(m, dtype=torch.long, device=device).scatter(0, ids, low)[splitting]
        new_size = torch.stack([low_of, size[splitting] - low_of], 1).reshape(-1)
        pairs = splitting.unsqueeze(1).expand(k, 2).reshape(-1)
        node_image = torch.cat([node_image, node_image[pairs]])
        parent = torch.cat([parent, pairs])
        level = torch.cat([level, torch.full((2 * k,), depth + 1, dtype=torch.long, device=device)])
        size = torch.cat([size, new_size])
        ncut = torch.cat([ncut, torch.full((2 * k,), float("inf"), dtype=torch.float64, device=device)])
        eigenvalue = torch.cat([eigenvalue, torch.full((2 * k,), float("inf"), dtype=torch.float64, device=device)])
        children = torch.cat([children, torch.full((2 * k, 2), -1, dtype=torch.long, device=device)])
        nodes += 2 * k
        grow = (new_size < 2 * min_size).to(torch.uint8)  # 0 for children the next level splits
        frontier = new_ids[torch.sort(grow, stable=True).indices[: sum(histogram)]]

    if unconverged:
        warnings.warn(
            f"recursive_ncut: {unconverged} sub-graph eigen-solves did not reach tol={params.tol:g}; their "
            "splits use the best Ritz vector found (raise tol to silence)",
            RuntimeWarning,
            stacklevel=4,  # _recursive_ncut, recursive_ncut, torch.compiler.disable's wrapper, the caller
        )
    seg = Segmentation(
        labels=torch.zeros(b, n, dtype=torch.long, device=device),
        node_image=node_image,
        parent=parent,
        children=children,
        level=level,
        size=size,
        ncut=ncut,
        eigenvalue=eigenvalue,
        path=torch.stack(path),
        thresholds=bound,
        explored_below=bound.clone(),
    )
    seg.thresholds = policy(seg).to(torch.float64)
    seg.labels = seg.labels_at(torch.minimum(seg.thresholds, seg.explored_below))
    return seg


def _rescue(solved: list, params: LanczosParams) -> list:
    """Float64 rescue of the float32 Lanczos buckets of a level: one host read of how many graphs of
    each bucket did not converge, then one float64 solve per bucket that has any."""
    due = [i for i, item in enumerate(solved) if item[4]]
    if not due:
        return solved
    counts = torch.stack([(~solved[i][3].converged).sum() for i in due]).tolist()
    solved = list(solved)
    for i, count in zip(due, counts):
        bucket, stored, sub, info, _ = solved[i]
        solved[i] = (bucket, stored, sub, rescue_stuck(sub, bucket.sizes, info, count, params), False)
    return solved


def _empty_hierarchy(b: int, n: int, device: torch.device) -> tuple:
    """Fields of a hierarchy with roots only: lets a constant policy report its tau before the recursion."""
    roots = torch.arange(b, device=device)
    inf = torch.full((b,), float("inf"), dtype=torch.float64, device=device)
    return (
        torch.zeros(b, n, dtype=torch.long, device=device),
        roots,
        torch.full((b,), -1, dtype=torch.long, device=device),
        torch.full((b, 2), -1, dtype=torch.long, device=device),
        torch.zeros(b, dtype=torch.long, device=device),
        torch.full((b,), n, dtype=torch.long, device=device),
        inf,
        inf.clone(),
        roots.unsqueeze(0).unsqueeze(-1).expand(1, b, n),
        inf.clone(),
        inf.clone(),
    )
