"""When to stop splitting: threshold policies on the NCut values of the hierarchy, and their registry.

A policy maps a ``Segmentation`` hierarchy to one threshold per image; a node is split while its NCut
is below that threshold (and its parent was split). ``ConstantThreshold`` is DiffCut's fixed tau.
The dynamic policies need no hyperparameter: they read the threshold off the image's own candidate
hierarchy (every split the recursion could make), so they ask the recursion to explore it fully.

* ``NullBoundThreshold`` (``threshold="dynamic"``): log-Otsu among the *significant* splits only, those
  whose NCut is below the null bound, the smallest NCut that structureless images (constant, noise)
  get from the same backbone at the same size (``null_model.py``; ``DiffCut`` calibrates it). Without a
  calibration the bound is 1, the fully mixed walk's value, and the policy is ``LogOtsuThreshold``.
* ``LogOtsuThreshold`` (``logotsu``): Otsu's split of the log candidate NCut values. NCut values are
  ratios (escape probabilities); on a log scale both populations are closer to symmetric, and the rule
  is invariant to rescaling all values.
* ``NullModelThreshold`` (``null``): tau = 1, the NCut that every split of a fully mixed walk has. With
  the reversible graph, NCut(S, S') = Pr(escape S) + Pr(escape S'); under the walk P = 1 pi^T a step
  lands in S' with probability pi(S'), so the sum is pi(S') + pi(S) = 1 for *every* split.
* ``OtsuThreshold`` (``otsu``): Otsu's criterion (max between-class variance) on the candidate values,
  between real boundaries (low) and splits through coherent regions (high).
* ``LargestGapThreshold`` (``gap``): tau at the middle of the widest gap between consecutive sorted
  candidate values (natural-breaks with one break).

Experimental policies (``wotsu``, ``modularity``) live in ``dynamic_extra.py`` and register themselves
in ``POLICIES`` when ``diffcut_gpu.spectral`` is imported; this module never imports them. See
docs/results.md for how every policy scores on BSDS500.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .hierarchy import Segmentation


@runtime_checkable
class ThresholdPolicy(Protocol):
    """Maps a hierarchy to per-image thresholds (B,)."""

    needs_full_hierarchy: bool

    def __call__(self, hierarchy: Segmentation) -> Tensor: ...


class ConstantThreshold:
    """The same tau for every image (DiffCut's default is 0.5). Lets the recursion prune early."""

    needs_full_hierarchy = False

    def __init__(self, tau: float = 0.5) -> None:
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
            raise ValueError(f"threshold: expected a number > 0, got {tau!r}")
        self.tau = float(tau)

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        return torch.full((hierarchy.num_images,), self.tau, dtype=torch.float64, device=hierarchy.ncut.device)

    def __repr__(self) -> str:
        return f"ConstantThreshold({self.tau})"


def sorted_candidates(hierarchy: Segmentation, *, with_sizes: bool = False) -> tuple[Tensor, ...]:
    """Each image's candidate NCut values (internal nodes, finite), sorted, on the device.

    Returns:
        values: (B, K) float64 ascending per row, +inf beyond ``count``; K = the largest count (>= 1).
        count: (B,) number of candidates per image.
        sizes: (B, K) float64 tokens of each candidate's node, 0 beyond ``count`` (only ``with_sizes``).
    """
    b = hierarchy.num_images
    device = hierarchy.ncut.device
    cand = (hierarchy.children[:, 0] >= 0) & torch.isfinite(hierarchy.ncut)
    value = hierarchy.ncut[cand].to(torch.float64)
    image = hierarchy.node_image[cand]
    order = torch.argsort(value, stable=True)
    order = order[torch.argsort(image[order], stable=True)]
    value, image = value[order], image[order]
    count = torch.bincount(image, minlength=b)
    start = torch.cumsum(count, 0) - count
    pos = torch.arange(value.numel(), device=device) - start[image]
    width = max(1, int(count.max())) if b else 1
    rows = torch.full((b, width), float("inf"), dtype=torch.float64, device=device)
    rows[image, pos] = value
    if not with_sizes:
        return rows, count
    sizes = torch.zeros((b, width), dtype=torch.float64, device=device)
    sizes[image, pos] = hierarchy.size[cand][order].to(torch.float64)
    return rows, count, sizes


# Candidate sets whose values span less than this carry no two populations: one segment.
FLAT_SPREAD = 1e-6


def degenerate_rows(tau: Tensor, values: Tensor, count: Tensor) -> Tensor:
    """``tau`` with the degenerate rows fixed: no candidate -> 0 (nothing to split), one candidate -> the
    null rule's 1, values spanning less than ``FLAT_SPREAD`` (no structure) -> their smallest value
    (strict ``<`` then keeps none of them)."""
    last = values.gather(1, (count - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
    spread = torch.where(count > 0, last - values[:, 0], torch.zeros_like(last))
    tau = torch.where(spread < FLAT_SPREAD, values[:, 0], tau)
    tau = torch.where(count == 1, torch.ones_like(tau), tau)
    return torch.where(count == 0, torch.zeros_like(tau), tau)


class _PerImagePolicy:
    """Shared plumbing: every image's sorted candidates as one padded (B, K) tensor, rule applied per row."""

    needs_full_hierarchy = True

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        values, count = sorted_candidates(hierarchy)
        k = torch.arange(values.shape[1], device=values.device)
        valid = k.unsqueeze(0) < count.unsqueeze(1)
        tau = self.threshold(torch.where(valid, values, torch.zeros_like(values)), count)
        return degenerate_rows(tau, values, count)

    def threshold(self, values: Tensor, count: Tensor) -> Tensor:
        """(B,) thresholds from rows of ascending values (zero-padded beyond ``count``, count >= 2)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def path_max_ncut(hierarchy: Segmentation) -> Tensor:
    """(M,) the largest NCut on each node's path from its root (itself included): the node is split at
    tau exactly when this is below tau (top-down rule)."""
    value = hierarchy.ncut.to(torch.float64)
    for depth in range(1, int(hierarchy.level.max()) + 1 if hierarchy.num_nodes else 0):
        at = hierarchy.level == depth
        value = torch.where(at, torch.maximum(value, value[hierarchy.parent.clamp_min(0)]), value)
    return value


def midpoint_after(values: Tensor, split: Tensor) -> Tensor:
    """(values[split] + values[split + 1]) / 2 per row."""
    idx = split.unsqueeze(1)
    return 0.5 * (values.gather(1, idx) + values.gather(1, (idx + 1).clamp_max(values.shape[1] - 1))).squeeze(1)


class NullModelThreshold(_PerImagePolicy):
    """Split while NCut < 1, the value of any split of a structureless (fully mixed) walk."""

    needs_full_hierarchy = False

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        return torch.ones(hierarchy.num_images, dtype=torch.float64, device=hierarchy.ncut.device)


class OtsuThreshold(_PerImagePolicy):
    """Otsu split of the image's candidate NCut values; a single candidate is judged by the null rule."""

    def threshold(self, values: Tensor, count: Tensor) -> Tensor:
        n = count.unsqueeze(1).to(values.dtype)
        k = torch.arange(1, values.shape[1] + 1, device=values.device, dtype=values.dtype).unsqueeze(0)
        csum = torch.cumsum(values, dim=1)
        total = csum.gather(1, (count - 1).clamp_min(0).unsqueeze(1))
        mean_lo = csum / k
        mean_hi = (total - csum) / (n - k).clamp_min(1)
        between = k * (n - k) * (mean_hi - mean_lo) ** 2
        between = torch.where(k < n, between, torch.full_like(between, -1.0))
        return midpoint_after(values, between.argmax(1))


class LogOtsuThreshold(OtsuThreshold):
    """Otsu split of the log of the image's candidate NCut values (tau at their geometric midpoint)."""

    def threshold(self, values: Tensor, count: Tensor) -> Tensor:
        logs = torch.log(values.clamp_min(torch.finfo(values.dtype).tiny))
        return torch.exp(super().threshold(logs, count))


class LargestGapThreshold(_PerImagePolicy):
    """Tau in the middle of the widest gap between consecutive sorted candidate values."""

    def threshold(self, values: Tensor, count: Tensor) -> Tensor:
        gaps = values[:, 1:] - values[:, :-1]
        k = torch.arange(1, values.shape[1], device=values.device).unsqueeze(0)
        gaps = torch.where(k < count.unsqueeze(1), gaps, torch.full_like(gaps, -1.0))
        if gaps.shape[1] == 0:
            return values[:, 0]
        return midpoint_after(values, gaps.argmax(1))


class NullBoundThreshold:
    """Split only where NCut is below the null bound; among those, the base policy sets the granularity.

    Args:
        bound: the null bound in (0, 1]: no split of a structureless image through the same backbone at
            the same size had a smaller NCut (``null_model.calibrate_null``). 1.0 (uncalibrated, the fully
            mixed walk's NCut) gives the base policy unchanged, the previous default.
        base: policy choosing the threshold among significant splits (default log-Otsu). ``None``: the
            bound alone, every significant split is kept.

    The significance rule is per node (``significant``): the recursion expands only nodes whose NCut is
    below the bound (the policy reports the bound on a hierarchy without candidates), and the base policy
    chooses among those, so no full hierarchy is needed and the recursion stops early. Uncalibrated
    (bound 1) the policy is its base, with the base's needs.
    """

    def __init__(self, bound: float = 1.0, base: ThresholdPolicy | str | None = "logotsu") -> None:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound <= 1:
            raise ValueError(f"bound: expected a null NCut in (0, 1], got {bound!r}")
        self.bound = float(bound)
        self.base = None if base is None else make_policy(base)
        self.needs_full_hierarchy = self.bound >= 1 and self.base is not None and self.base.needs_full_hierarchy

    def significant(self, size: Tensor, ncut: Tensor, eigenvalue: Tensor, level: Tensor) -> Tensor:
        """(M,) bool per node: ``ncut < bound`` (size, eigenvalue and level complete the per-node API)."""
        del size, eigenvalue, level
        return ncut < self.bound

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        bound = torch.full((hierarchy.num_images,), self.bound, dtype=torch.float64, device=hierarchy.ncut.device)
        if self.base is None:
            return bound
        if self.bound >= 1:  # uncalibrated: the base policy as it is (the previous default for "dynamic")
            return self.base(hierarchy).to(torch.float64)
        # The base policy sees the significant candidates only, each at the threshold that splits it under
        # the top-down rule (the largest NCut on its path from the root): the splits it may choose.
        value = path_max_ncut(hierarchy)
        value = torch.where(value < self.bound, value, torch.full_like(value, float("inf")))
        significant = dataclasses.replace(hierarchy, ncut=value)
        values, count = sorted_candidates(significant)
        last = values.gather(1, (count - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        one_population = (count < 2) | (last - values[:, 0] < FLAT_SPREAD)  # nothing to choose: keep them all
        tau = torch.minimum(self.base(significant).to(torch.float64), bound)
        return torch.where(one_population, bound, tau)

    def with_bound(self, bound: float) -> NullBoundThreshold:
        """The same policy with another null bound (``DiffCut`` sets the calibrated one)."""
        return NullBoundThreshold(bound, self.base)

    def __repr__(self) -> str:
        return f"NullBoundThreshold(bound={self.bound:.4g}, base={self.base!r})"


#: Name -> policy factory. ``dynamic_extra`` adds the experimental ones at import of ``diffcut_gpu.spectral``.
#: A factory with ``needs_graph = True`` is called with the graph that is cut (``make_policy(graph=W)``).
POLICIES: dict[str, Callable[..., ThresholdPolicy]] = {
    "dynamic": NullBoundThreshold,
    "logotsu": LogOtsuThreshold,
    "otsu": OtsuThreshold,
    "gap": LargestGapThreshold,
    "null": NullModelThreshold,
}


def register_policy(name: str, factory: Callable[..., ThresholdPolicy]) -> None:
    """Make ``threshold=name`` build ``factory()`` (or ``factory(graph)`` if it has ``needs_graph``)."""
    if name in POLICIES and POLICIES[name] is not factory:
        raise ValueError(f"name: policy {name!r} is already registered as {POLICIES[name]!r}")
    POLICIES[name] = factory


def policy_names() -> tuple[str, ...]:
    """Every name ``threshold=`` accepts, "dynamic" first (the CLI lists these)."""
    return tuple(POLICIES)


def make_policy(threshold: float | str | ThresholdPolicy, *, graph: Tensor | None = None) -> ThresholdPolicy:
    """A policy from a number (constant tau), a registered name (``policy_names()``) or a policy object.

    ``graph``: the (B, N, N) graph that is cut, for the policies that score partitions on it.
    """
    if isinstance(threshold, ThresholdPolicy) and not isinstance(threshold, (int, float, str)):
        return threshold
    if isinstance(threshold, str):
        if threshold not in POLICIES:
            others = sorted(n for n in POLICIES if n != "dynamic")
            raise ValueError(f"threshold: expected a number, 'dynamic' or one of {others}, got {threshold!r}")
        factory = POLICIES[threshold]
        if getattr(factory, "needs_graph", False):
            if graph is None:
                raise ValueError(f"threshold: {threshold!r} scores partitions on the graph that is cut; build "
                                 f"the policy with it ({getattr(factory, '__name__', factory)}(W)) or use RWNCut")
            return factory(graph)
        return factory()
    return ConstantThreshold(threshold)
