"""Recursive two-way Normalized Cuts, level-synchronous and batched over images and segments.

Level by level, every segment of every image that may still split becomes an induced sub-graph; the
sub-graphs are packed into padded size buckets and each bucket is solved by one batched Fiedler call and
one batched sweep cut. The recursion records every candidate split in a ``Segmentation`` hierarchy; the
threshold policy then decides which splits to keep. A constant threshold prunes during the recursion
(a rejected node is not expanded); a dynamic one explores the full candidate hierarchy first.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._checks import check_graph, check_int
from .fiedler import solve_fiedler
from .hierarchy import Segmentation
from .subgraph import gather_subgraphs, make_buckets
from .sweep import sweep_cut_clean
from .thresholds import ThresholdPolicy, make_policy


def recursive_ncut(
    W: Tensor,
    *,
    threshold: float | str | ThresholdPolicy = 0.5,
    min_size: int = 4,
    max_depth: int = 8,
    full_hierarchy: bool | None = None,
    method: str = "auto",
    tol: float = 1e-5,
    max_bucket_elements: int = 1 << 26,
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
        tol: residual tolerance of the eigen-solver.
        max_bucket_elements: bound on S * n * n of one batched solve (memory of a bucket).

    Returns:
        ``Segmentation`` with ``labels`` (B, N) int64 and the hierarchy.

    Example:
        >>> W = reversibilize(attention)           # attention: (B, N, N) row-stochastic
        >>> seg = recursive_ncut(W, threshold="dynamic")
        >>> seg.labels.shape, seg.labels_at(0.3).shape
    """
    check_graph("W", W)
    check_int("min_size", min_size, 1)
    check_int("max_depth", max_depth, 0)
    policy = make_policy(threshold)
    explore_all = policy.needs_full_hierarchy if full_hierarchy is None else bool(full_hierarchy)
    if policy.needs_full_hierarchy and not explore_all:
        raise ValueError(f"full_hierarchy: {policy!r} reads the full candidate hierarchy, got full_hierarchy=False")
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
    frontier = node_image[size >= 2 * min_size]

    work = torch.float64 if W.dtype == torch.float64 else torch.float32
    unconverged = 0
    for depth in range(max_depth):
        if frontier.numel() == 0:
            break
        solved_ids, solved_ncut, solved_lam = [], [], []
        low_side, members, member_seg, member_valid = [], [], [], []
        for bucket in make_buckets(assignment, frontier, node_image, max_elements=max_bucket_elements):
            # Sub-graphs of a checked graph, with exactly-zero padding: the unchecked solvers apply.
            stored = gather_subgraphs(W, bucket.image_index, bucket.node_index, bucket.sizes)
            sub = stored.to(work)
            width = bucket.node_index.shape[1]
            valid = torch.arange(width, device=device).unsqueeze(0) < bucket.sizes.unsqueeze(1)
            tokens = bucket.image_index.unsqueeze(1) * n + bucket.node_index  # (S, width) flat token ids
            info = solve_fiedler(sub, method=method, tol=tol, sizes=bucket.sizes, stored=stored)
            lam, x = info.lam, info.x
            unconverged += int((~info.converged).sum())
            cut, mask = sweep_cut_clean(sub, x, bucket.sizes, min_side=min_size)
            solved_ids.append(bucket.segment_ids)
            solved_ncut.append(cut)
            solved_lam.append(lam.to(torch.float64))
            # Every padded member slot, flattened: its token (image * n + id), segment, side, validity.
            low_side.append(mask.reshape(-1))
            members.append(tokens.reshape(-1))
            member_seg.append(bucket.segment_ids.repeat_interleave(width))
            member_valid.append(valid.reshape(-1))

        ids = torch.cat(solved_ids)
        cuts = torch.cat(solved_ncut)
        ncut[ids] = cuts
        eigenvalue[ids] = torch.cat(solved_lam)
        split = torch.isfinite(cuts) & (cuts < bound[node_image[ids]])
        splitting = torch.sort(ids[split]).values  # ids in order: node numbering independent of buckets
        k = int(splitting.numel())
        if k == 0:
            break

        # Allocate two children per accepted split: ids m + 2i (low side of x) and m + 2i + 1.
        m = int(parent.numel())
        new_ids = m + torch.arange(2 * k, device=device)
        child_of = torch.full((m,), -1, dtype=torch.long, device=device)
        child_of[splitting] = new_ids[0::2]
        children[splitting] = new_ids.view(k, 2)

        seg_of_slot = torch.cat(member_seg)
        flat_members = torch.cat(members)
        keep = torch.cat(member_valid) & (child_of[seg_of_slot] >= 0)
        first_child = child_of[seg_of_slot[keep]]
        new_node = first_child + (~torch.cat(low_side)[keep]).long()
        assignment = assignment.clone().view(-1)
        assignment[flat_members[keep]] = new_node
        assignment = assignment.view(b, n)
        path.append(assignment)

        new_size = torch.bincount(new_node, minlength=m + 2 * k)[m:]
        node_image = torch.cat([node_image, node_image[splitting].repeat_interleave(2)])
        parent = torch.cat([parent, splitting.repeat_interleave(2)])
        level = torch.cat([level, torch.full((2 * k,), depth + 1, dtype=torch.long, device=device)])
        size = torch.cat([size, new_size])
        ncut = torch.cat([ncut, torch.full((2 * k,), float("inf"), dtype=torch.float64, device=device)])
        eigenvalue = torch.cat([eigenvalue, torch.full((2 * k,), float("inf"), dtype=torch.float64, device=device)])
        children = torch.cat([children, torch.full((2 * k, 2), -1, dtype=torch.long, device=device)])
        frontier = new_ids[new_size >= 2 * min_size] if depth + 1 < max_depth else new_ids[:0]

    if unconverged:
        warnings.warn(
            f"recursive_ncut: {unconverged} sub-graph eigen-solves did not reach tol={tol:g}; their splits "
            "use the best Ritz vector found (raise tol to silence)",
            RuntimeWarning,
            stacklevel=2,
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
    seg.extras["graph"] = W  # a reference, for policies that score partitions on the graph (modularity)
    seg.thresholds = policy(seg).to(torch.float64)
    seg.labels = seg.labels_at(torch.minimum(seg.thresholds, seg.explored_below))
    return seg


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
