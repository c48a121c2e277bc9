"""Experimental hyperparameter-free threshold policies, compared on BSDS500 (docs/results.md).

* ``MaxModularityThreshold`` (``modularity``): among the nested segmentations the hierarchy offers (one
  per candidate threshold), take the one of largest **modularity** of the graph that was cut,

      Q(S_1..S_m) = sum_s [ W(S_s, S_s) / vol - (vol(S_s) / vol)^2 ].

  For the reversible walk graph ``W = reversibilize(P^k)`` (volume 1, degrees pi) this is the Markov
  stability of the partition at time k (Delvenne, Yaliraki & Barahona, PNAS 2010): the probability that
  k steps of the stationary walk stay in their segment, minus that probability for a walk with no
  memory. Splitting ``S`` into ``A, B`` changes Q by ``2 (pi(A) pi(B) - cut(A, B))``, which is positive
  exactly when the root split has NCut < 1: the null-model rule is the first, greedy step of this one,
  which instead weighs every level of the hierarchy against all others. No parameter: the walk's own
  power sets the resolution. Needs the graph: pass it to the constructor (``make_policy("modularity",
  graph=W)`` and ``RWNCut`` do).
* ``TokenWeightedOtsuThreshold`` (``wotsu``): Otsu with each candidate weighted by the size of the node it
  splits.

Importing this module registers both names in ``thresholds.POLICIES``; ``diffcut_gpu.spectral`` does so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .thresholds import degenerate_rows, register_policy, sorted_candidates

if TYPE_CHECKING:
    from .hierarchy import Segmentation

__all__ = ["MaxModularityThreshold", "TokenWeightedOtsuThreshold", "node_modularity"]


class TokenWeightedOtsuThreshold:
    """Otsu split of the candidate NCut values, each weighted by the tokens of the node it would split.

    Unweighted, the candidates of a full hierarchy are mostly the many small deep nodes (a binary tree has
    2^d nodes at depth d), so Otsu's two classes describe tiny nodes. Weighted by size, every level of
    the hierarchy (a partition of the tokens) carries the same total weight: the rule thresholds the NCut
    *a token* meets on its way down the tree. Same degenerate cases as ``OtsuThreshold``.
    """

    needs_full_hierarchy = True

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        values, count, sizes = sorted_candidates(hierarchy, with_sizes=True)
        v = torch.where(torch.isfinite(values), values, torch.zeros_like(values))
        w_lo = torch.cumsum(sizes, 1)
        m_lo = torch.cumsum(sizes * v, 1)
        w_all, m_all = w_lo[:, -1:], m_lo[:, -1:]
        w_hi = w_all - w_lo
        mean_lo = m_lo / w_lo.clamp_min(1e-300)
        mean_hi = (m_all - m_lo) / w_hi.clamp_min(1e-300)
        between = w_lo * w_hi * (mean_hi - mean_lo) ** 2
        k = torch.arange(1, values.shape[1] + 1, device=values.device).unsqueeze(0)
        between = torch.where(k < count.unsqueeze(1), between, torch.full_like(between, -1.0))
        split = between.argmax(1, keepdim=True)
        nxt = (split + 1).clamp_max(values.shape[1] - 1)
        tau = 0.5 * (values.gather(1, split) + values.gather(1, nxt)).squeeze(1)
        return degenerate_rows(tau, values, count)

    def __repr__(self) -> str:
        return "TokenWeightedOtsuThreshold()"


def node_modularity(hierarchy: Segmentation, W: Tensor) -> Tensor:
    """(M,) float64 modularity term ``W(S, S) / vol - (vol(S) / vol)^2`` of every node of the hierarchy.

    Args:
        hierarchy: a ``Segmentation`` of the graphs ``W``.
        W: (B, N, N) the symmetric graphs that were cut.
    """
    if W.ndim != 3 or W.shape[0] != hierarchy.num_images or W.shape[1] != hierarchy.path.shape[-1]:
        raise ValueError(f"W: expected the cut graphs ({hierarchy.num_images}, N, N) with "
                         f"N={hierarchy.path.shape[-1]}, got {tuple(W.shape)}")
    w = W.to(hierarchy.path.device, torch.float64)
    degree = w.sum(-1)                                                       # (B, N)
    volume = degree.sum(-1).clamp_min(torch.finfo(torch.float64).tiny)       # (B,)
    m = hierarchy.num_nodes
    inner = torch.zeros(m, dtype=torch.float64, device=w.device)
    vol = torch.zeros(m, dtype=torch.float64, device=w.device)
    done = torch.zeros(m, dtype=torch.bool, device=w.device)
    for nodes in hierarchy.path:                                             # (B, N) node of each token
        same = nodes.unsqueeze(-1) == nodes.unsqueeze(-2)
        row = (w * same).sum(-1)                                             # weight from i into its node
        level_inner = torch.zeros(m, dtype=torch.float64, device=w.device).index_add_(0, nodes.reshape(-1),
                                                                                      row.reshape(-1))
        level_vol = torch.zeros(m, dtype=torch.float64, device=w.device).index_add_(0, nodes.reshape(-1),
                                                                                    degree.reshape(-1))
        fresh = torch.zeros(m, dtype=torch.bool, device=w.device)
        fresh[nodes.reshape(-1)] = True
        fresh &= ~done
        inner = torch.where(fresh, level_inner, inner)
        vol = torch.where(fresh, level_vol, vol)
        done |= fresh
    v = volume[hierarchy.node_image]
    return inner / v - (vol / v) ** 2


class MaxModularityThreshold:
    """Per image, the threshold whose segmentation has the largest modularity of the cut graph ``W``."""

    needs_full_hierarchy = True
    needs_graph = True  # make_policy("modularity", graph=W) passes the graph

    def __init__(self, graph: Tensor) -> None:
        if not isinstance(graph, Tensor) or graph.ndim != 3:
            got = tuple(graph.shape) if isinstance(graph, Tensor) else type(graph).__name__
            raise ValueError(f"graph: expected the (B, N, N) graph that is cut, got {got}")
        self.graph = graph

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        q = node_modularity(hierarchy, self.graph)
        children = hierarchy.children
        has = children[:, 0] >= 0
        gain = torch.where(has, q[children.clamp_min(0)].sum(-1) - q, torch.zeros_like(q))    # (M,)
        values, count = sorted_candidates(hierarchy)                                         # (B, K), (B,)
        b, width = values.shape
        inf = torch.tensor(float("inf"), dtype=torch.float64, device=values.device)
        best_q = torch.zeros(b, dtype=torch.float64, device=values.device)  # one segment: Q = 0
        best_j = torch.zeros(b, dtype=torch.long, device=values.device)
        for j in range(1, width + 1):  # threshold just above the j-th smallest candidate
            split = hierarchy.split_nodes(torch.nextafter(values[:, j - 1], inf))
            total = torch.zeros(b, dtype=torch.float64, device=values.device).index_add_(
                0, hierarchy.node_image, torch.where(split, gain, torch.zeros_like(gain)))
            better = (total > best_q + 1e-12) & (j <= count)
            best_q = torch.where(better, total, best_q)
            best_j = torch.where(better, torch.full_like(best_j, j), best_j)
        below = values.gather(1, (best_j - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        above = values.gather(1, best_j.clamp_max(width - 1).unsqueeze(1)).squeeze(1)
        tau = torch.where(best_j < count, 0.5 * (below + above), torch.nextafter(below, inf))
        tau = torch.where(best_j == 0, values[:, 0], tau)  # nothing strictly below the smallest: one segment
        return torch.where(count == 0, torch.zeros_like(tau), tau)

    def __repr__(self) -> str:
        return "MaxModularityThreshold()"


register_policy("wotsu", TokenWeightedOtsuThreshold)
register_policy("modularity", MaxModularityThreshold)
