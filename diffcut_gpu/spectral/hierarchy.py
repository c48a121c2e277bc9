"""The result of recursive NCut: a binary hierarchy of candidate splits, re-cuttable at any threshold.

Nodes of all images share one id space, created level by level (ids grow with depth). Node ``b`` is the
root of image ``b``. A node is **split** at threshold tau when it has children, its NCut is below tau
and its parent is split (top-down rule, as in the recursion itself), so the set of split nodes only grows
with tau and ``labels_at`` is monotone: a larger tau refines the segmentation.

``labels_for_count(K)`` cuts the same hierarchy into K segments instead: starting from the root it splits,
K - 1 times, the open node (children recorded, parent split) of lowest NCut. It follows the top-down rule
(a node opens only once its parent is split) and is nested: the K + 1 segmentation refines the K one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Segmentation:
    """Token labels plus the hierarchy that produced them.

    Attributes:
        labels: (B, N) int64 segment labels, consecutive from 0 per image.
        node_image: (M,) image of each node.
        parent: (M,) parent id, -1 for roots.
        children: (M, 2) child ids (first child holds the low side of the Fiedler vector), -1 if none.
        level: (M,) depth, 0 for roots.
        size: (M,) number of tokens.
        ncut: (M,) float64 NCut of the node's best split; +inf where none was evaluated or allowed.
        eigenvalue: (M,) Fiedler eigenvalue of the node's sub-graph; +inf where not evaluated.
        path: (L+1, B, N) node of every token at each level (a token keeps its node once it stops).
        thresholds: (B,) threshold that produced ``labels``.
        explored_below: (B,) candidates were explored for every NCut below this (inf: full hierarchy).
    """

    labels: Tensor
    node_image: Tensor
    parent: Tensor
    children: Tensor
    level: Tensor
    size: Tensor
    ncut: Tensor
    eigenvalue: Tensor
    path: Tensor
    thresholds: Tensor
    explored_below: Tensor
    extras: dict = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return int(self.path.shape[1])

    @property
    def num_nodes(self) -> int:
        return int(self.parent.shape[0])

    @property
    def num_segments(self) -> Tensor:
        """(B,) number of segments of ``labels`` per image."""
        return self.labels.amax(-1) + 1 if self.labels.numel() else self.labels.new_zeros(self.labels.shape[0])

    def split_nodes(self, tau: float | Tensor) -> Tensor:
        """(M,) bool: nodes split at per-image threshold ``tau`` (scalar or (B,))."""
        tau = self._per_image(tau)
        has_children = self.children[:, 0] >= 0
        candidate = has_children & (self.ncut < tau[self.node_image])
        split = torch.zeros_like(candidate)
        for depth in range(int(self.level.max()) + 1 if self.num_nodes else 0):
            at = self.level == depth
            parent_ok = torch.ones_like(candidate) if depth == 0 else split[self.parent.clamp_min(0)]
            split = torch.where(at, candidate & parent_ok, split)
        return split

    def labels_at(self, tau: float | Tensor) -> Tensor:
        """(B, N) int64 labels obtained by cutting the hierarchy at ``tau`` (scalar or per image (B,))."""
        tau = self._per_image(tau)
        if bool((tau > self.explored_below).any()):
            raise ValueError(
                f"tau: expected at most the threshold the hierarchy was explored with "
                f"({self.explored_below.min().item():.4g}), got {tau.max().item():.4g}; rerun recursive_ncut "
                "with full_hierarchy=True to re-cut at any threshold"
            )
        return self._relabel(self.leaf_nodes(tau))

    def leaf_nodes(self, tau: float | Tensor) -> Tensor:
        """(B, N) node id of every token's segment at threshold ``tau``."""
        return self._leaves(self.split_nodes(tau))

    def split_nodes_for_count(self, segments: int | Tensor) -> Tensor:
        """(M,) bool: the nodes split to get ``segments`` segments per image (scalar or (B,) ints >= 1).

        Greedy top-down: ``segments - 1`` times, split the lowest-NCut open node of the image (ties: lowest
        id). An image whose hierarchy has fewer leaves gets all of its recorded splits.
        """
        k = torch.as_tensor(segments, device=self.ncut.device)
        if k.is_floating_point() or k.dtype == torch.bool or bool((k < 1).any()):
            raise ValueError(f"segments: expected ints >= 1, got {segments!r}")
        k = k.long().expand(self.num_images) if k.ndim == 0 else k.long()
        if k.shape != (self.num_images,):
            raise ValueError(f"segments: expected a scalar or shape ({self.num_images},), got {tuple(k.shape)}")
        m = self.num_nodes
        ids = torch.arange(m, device=self.ncut.device)
        candidate = (self.children[:, 0] >= 0) & torch.isfinite(self.ncut)
        split = torch.zeros(m, dtype=torch.bool, device=self.ncut.device)
        inf = torch.tensor(float("inf"), dtype=self.ncut.dtype, device=self.ncut.device)
        for step in range(int(k.max()) - 1 if k.numel() else 0):
            parent_split = torch.where(self.parent >= 0, split[self.parent.clamp_min(0)], torch.ones_like(split))
            open_ = candidate & ~split & parent_split & (step < k - 1)[self.node_image]
            if not bool(open_.any()):
                break
            key = torch.where(open_, self.ncut, inf)
            best = torch.full((self.num_images,), float("inf"), dtype=key.dtype, device=key.device)
            best.scatter_reduce_(0, self.node_image, key, reduce="amin")
            hit = open_ & (key == best[self.node_image])
            first = torch.full((self.num_images,), m, dtype=torch.long, device=key.device)
            first.scatter_reduce_(0, self.node_image, torch.where(hit, ids, torch.full_like(ids, m)), reduce="amin")
            split[first[first < m]] = True
        return split

    def labels_for_count(self, segments: int | Tensor) -> Tensor:
        """(B, N) int64 labels with ``segments`` segments per image (fewer where the hierarchy has fewer leaves).

        Needs the candidates explored far enough: run ``recursive_ncut`` with ``full_hierarchy=True``.
        """
        return self._relabel(self._leaves(self.split_nodes_for_count(segments)))

    def _leaves(self, split: Tensor) -> Tensor:
        """(B, N) node id of every token's segment when the nodes of ``split`` (M,) are split."""
        node = self.path[0]
        for depth in range(1, self.path.shape[0]):
            node = torch.where(split[node], self.path[depth], node)
        return node

    def _per_image(self, tau: float | Tensor) -> Tensor:
        b = self.num_images
        device = self.ncut.device
        t = torch.as_tensor(tau, dtype=torch.float64, device=device)
        if t.ndim == 0:
            return t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"tau: expected a scalar or shape ({b},), got {tuple(t.shape)}")
        return t

    def _relabel(self, node: Tensor) -> Tensor:
        """Map node ids to consecutive labels per image, in raster order of first appearance.

        Label 0 is the segment of token 0, label 1 the next new segment in token order, and so on: the
        numbering depends only on the image's own partition, not on node ids or on the batch around it.
        """
        b, n = node.shape
        m = self.num_nodes
        position = torch.arange(n, device=node.device).expand(b, n)
        first = torch.full((m,), n, dtype=torch.long, device=node.device)
        first.scatter_reduce_(0, node.reshape(-1), position.reshape(-1), reduce="amin")
        used = first < n
        key = torch.where(used, self.node_image * (n + 1) + first, torch.full_like(first, b * (n + 1)))
        order = torch.argsort(key)
        count = int(used.sum())
        ranked_image = self.node_image[order[:count]]
        start = torch.full((b,), count, dtype=torch.long, device=node.device)
        start.scatter_reduce_(0, ranked_image, torch.arange(count, device=node.device), reduce="amin")
        label_of = torch.zeros(m, dtype=torch.long, device=node.device)
        label_of[order[:count]] = torch.arange(count, device=node.device) - start[ranked_image]
        return label_of[node]

    def image_tree(self, b: int) -> list[dict]:
        """Plain-Python hierarchy of image ``b`` (node id, parent, children, level, size, ncut), for JSON."""
        ids = torch.nonzero(self.node_image == b).squeeze(1).tolist()
        local = {g: i for i, g in enumerate(ids)}
        parent = self.parent.tolist()
        children = self.children.tolist()
        level = self.level.tolist()
        size = self.size.tolist()
        ncut = self.ncut.tolist()
        lam = self.eigenvalue.tolist()
        return [
            {
                "id": local[g],
                "parent": local.get(parent[g], -1),
                "children": [local[c] for c in children[g] if c >= 0],
                "level": level[g],
                "size": size[g],
                "ncut": ncut[g] if ncut[g] != float("inf") else None,
                "eigenvalue": lam[g] if lam[g] != float("inf") else None,
            }
            for g in ids
        ]
