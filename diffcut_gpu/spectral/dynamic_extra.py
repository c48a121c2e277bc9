"""Hyperparameter-free threshold policies beyond ``thresholds.py``, compared on BSDS500 train.

* ``MaxModularityThreshold``: among the nested segmentations the hierarchy offers (one per candidate
  threshold), take the one of largest **modularity** of the graph that was cut,

      Q(S_1..S_m) = sum_s [ W(S_s, S_s) / vol - (vol(S_s) / vol)^2 ].

  For the reversible walk graph ``W = reversibilize(P^k)`` (volume 1, degrees pi) this is the Markov
  stability of the partition at time k (Delvenne, Yaliraki & Barahona, PNAS 2010): the probability that
  k steps of the stationary walk stay in their segment, minus that probability for a walk with no
  memory. Splitting ``S`` into ``A, B`` changes Q by ``2 (pi(A) pi(B) - cut(A, B))``, which is positive
  exactly when the root split has NCut < 1: the null-model rule is the first, greedy step of this one,
  which instead weighs every level of the hierarchy against all others. No parameter: the walk's own
  power sets the resolution. Needs the graph: pass it to the constructor, or set
  ``hierarchy.extras["graph"]`` before calling the policy.
* ``LogOtsuThreshold``: Otsu's split of the log candidate NCut values. NCut values are ratios (escape
  probabilities); on a log scale both populations are closer to symmetric, and the rule is invariant to
  rescaling all values.
* ``TokenWeightedOtsuThreshold``: Otsu with each candidate weighted by the size of the node it splits.

On BSDS500 train (DINOv2-S, RW-NCut k = 1) ``LogOtsuThreshold`` had the best mean of covering and mIoU of
all policies (docs/results.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .thresholds import OtsuThreshold, sorted_candidates

if TYPE_CHECKING:
    from .hierarchy import Segmentation

# Candidate sets spanning less than this carry no two populations: one segment (as in thresholds.py).
_FLAT_SPREAD = 1e-6

__all__ = [
    "EXTRA_POLICIES",
    "LogOtsuThreshold",
    "MaxModularityThreshold",
    "TokenWeightedOtsuThreshold",
    "node_modularity",
]


class LogOtsuThreshold(OtsuThreshold):
    """Otsu split of the log of the image's candidate NCut values (tau at their geometric midpoint)."""

    def threshold(self, values: Tensor, count: Tensor) -> Tensor:
        logs = torch.log(values.clamp_min(torch.finfo(values.dtype).tiny))
        return torch.exp(super().threshold(logs, count))


def _sorted_weighted_candidates(hierarchy: Segmentation) -> tuple[Tensor, Tensor, Tensor]:
    """Candidate NCut values ascending per image, with the sizes of their nodes.

    Returns (B, K) values, (B, K) sizes, (B,) count; padded entries have value +inf and size 0.
    """
    b = hierarchy.num_images
    device = hierarchy.ncut.device
    cand = (hierarchy.children[:, 0] >= 0) & torch.isfinite(hierarchy.ncut)
    value = hierarchy.ncut[cand].to(torch.float64)
    size = hierarchy.size[cand].to(torch.float64)
    image = hierarchy.node_image[cand]
    order = torch.argsort(value, stable=True)
    order = order[torch.argsort(image[order], stable=True)]
    value, size, image = value[order], size[order], image[order]
    count = torch.bincount(image, minlength=b)
    pos = torch.arange(value.numel(), device=device) - (torch.cumsum(count, 0) - count)[image]
    width = max(1, int(count.max())) if b else 1
    values = torch.full((b, width), float("inf"), dtype=torch.float64, device=device)
    sizes = torch.zeros((b, width), dtype=torch.float64, device=device)
    values[image, pos] = value
    sizes[image, pos] = size
    return values, sizes, count


class TokenWeightedOtsuThreshold:
    """Otsu split of the candidate NCut values, each weighted by the tokens of the node it would split.

    Unweighted, the candidates of a full hierarchy are mostly the many small deep nodes (a binary tree has
    2^d nodes at depth d), so Otsu's two classes describe tiny nodes. Weighted by size, every level of
    the hierarchy (a partition of the tokens) carries the same total weight: the rule thresholds the NCut
    *a token* meets on its way down the tree. Same degenerate cases as ``OtsuThreshold``.
    """

    needs_full_hierarchy = True

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        values, sizes, count = _sorted_weighted_candidates(hierarchy)
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
        last = values.gather(1, (count - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        tau = torch.where(last - values[:, 0] < _FLAT_SPREAD, values[:, 0], tau)
        tau = torch.where(count == 1, torch.ones_like(tau), tau)
        return torch.where(count == 0, torch.zeros_like(tau), tau)

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
    """Per image, the threshold whose segmentation has the largest modularity of the cut graph."""

    needs_full_hierarchy = True

    def __init__(self, graph: Tensor | None = None) -> None:
        self.graph = graph

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        W = self.graph if self.graph is not None else hierarchy.extras.get("graph")
        if W is None:
            raise ValueError("graph: expected the (B, N, N) graph that was cut, got None; construct "
                             "MaxModularityThreshold(W) or set hierarchy.extras['graph'] = W")
        q = node_modularity(hierarchy, W)
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


#: Name -> policy class, for ``threshold=<name>`` in the evaluation runner.
EXTRA_POLICIES = {
    "wotsu": TokenWeightedOtsuThreshold,
    "logotsu": LogOtsuThreshold,
    "modularity": MaxModularityThreshold,
}
