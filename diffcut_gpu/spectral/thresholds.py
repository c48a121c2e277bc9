"""When to stop splitting: threshold policies on the NCut values of the hierarchy.

A policy maps a ``Segmentation`` hierarchy to one threshold per image; a node is split while its NCut
is below that threshold (and its parent was split). ``ConstantThreshold`` is DiffCut's fixed tau.
The dynamic policies need no hyperparameter: they read the threshold off the image's own candidate
hierarchy (every split the recursion could make), so they ask the recursion to explore it fully.

* ``NullModelThreshold``: tau = 1, the NCut that every split of a fully mixed walk has. With the
  reversible graph, NCut(S, S') = Pr(escape S) + Pr(escape S'); under the null walk P = 1 pi^T a step
  lands in S' with probability pi(S'), so the sum is pi(S') + pi(S) = 1 for *every* split. Splitting only
  while the walk leaves each side less often than a structureless walk would is the null-model rule.
* ``OtsuThreshold``: the image's candidate NCut values form two populations, real boundaries (low) and
  splits through coherent regions (high). Otsu's criterion (max between-class variance) places tau
  between them.
* ``LargestGapThreshold``: tau at the middle of the widest gap between consecutive sorted candidate
  values (natural-breaks with one break).

See docs/method.md for how they compare on BSDS500.
"""

from __future__ import annotations

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


def sorted_candidates(hierarchy: Segmentation) -> tuple[Tensor, Tensor]:
    """Each image's candidate NCut values (internal nodes, finite), sorted, on the device.

    Returns:
        values: (B, K) ascending per row, +inf beyond ``count``; K = the largest count (>= 1).
        count: (B,) number of candidates per image.
    """
    b = hierarchy.num_images
    device = hierarchy.ncut.device
    cand = (hierarchy.children[:, 0] >= 0) & torch.isfinite(hierarchy.ncut)
    value = hierarchy.ncut[cand]
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
    return rows, count


class _PerImagePolicy:
    """Shared plumbing: every image's sorted candidates as one padded (B, K) tensor, rule applied per row.

    Degenerate rows are handled here: no candidate -> 0 (nothing to split), one candidate -> the null
    rule's 1, values spanning less than ``_FLAT_SPREAD`` (no structure) -> their smallest value (strict
    ``<`` then keeps none of them).
    """

    needs_full_hierarchy = True

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        values, count = sorted_candidates(hierarchy)
        k = torch.arange(values.shape[1], device=values.device)
        valid = k.unsqueeze(0) < count.unsqueeze(1)
        last = values.gather(1, (count - 1).clamp_min(0).unsqueeze(1)).squeeze(1)
        spread = torch.where(count > 0, last - values[:, 0], torch.zeros_like(last))
        tau = self.threshold(torch.where(valid, values, torch.zeros_like(values)), count)
        tau = torch.where(spread < _FLAT_SPREAD, values[:, 0], tau)
        tau = torch.where(count == 1, torch.ones_like(tau), tau)
        return torch.where(count == 0, torch.zeros_like(tau), tau)

    def threshold(self, values: Tensor, count: Tensor) -> Tensor:
        """(B,) thresholds from rows of ascending values (zero-padded beyond ``count``, count >= 2)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# Candidate sets whose values span less than this carry no two populations: one segment.
_FLAT_SPREAD = 1e-6


def _midpoint_after(values: Tensor, split: Tensor) -> Tensor:
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
        return _midpoint_after(values, between.argmax(1))


class LargestGapThreshold(_PerImagePolicy):
    """Tau in the middle of the widest gap between consecutive sorted candidate values."""

    def threshold(self, values: Tensor, count: Tensor) -> Tensor:
        gaps = values[:, 1:] - values[:, :-1]
        k = torch.arange(1, values.shape[1], device=values.device).unsqueeze(0)
        gaps = torch.where(k < count.unsqueeze(1), gaps, torch.full_like(gaps, -1.0))
        if gaps.shape[1] == 0:
            return values[:, 0]
        return _midpoint_after(values, gaps.argmax(1))


DYNAMIC_POLICIES: dict[str, type[_PerImagePolicy]] = {
    "null": NullModelThreshold,
    "otsu": OtsuThreshold,
    "gap": LargestGapThreshold,
}

#: The policy that ``threshold="dynamic"`` means, chosen by measurement on BSDS500 train: Otsu on the log
#: of the candidate NCut values had the best mean of covering and mIoU of all hyperparameter-free rules
#: (docs/results.md).
DEFAULT_DYNAMIC = "logotsu"


def policy_names() -> dict[str, type]:
    """Every named policy: the core ones here and the extra ones of ``dynamic_extra``."""
    from .dynamic_extra import EXTRA_POLICIES  # imports this module: resolved at call time

    return {**DYNAMIC_POLICIES, **EXTRA_POLICIES}


def make_policy(threshold: float | str | ThresholdPolicy) -> ThresholdPolicy:
    """A policy from a number (constant tau), a name ("dynamic", "null", "otsu", "gap", "logotsu",
    "wotsu", "modularity") or a policy object."""
    if isinstance(threshold, ThresholdPolicy) and not isinstance(threshold, (int, float, str)):
        return threshold
    if isinstance(threshold, str):
        names = policy_names()
        name = DEFAULT_DYNAMIC if threshold == "dynamic" else threshold
        if name not in names:
            raise ValueError(
                f"threshold: expected a number, 'dynamic' or one of {sorted(names)}, got {threshold!r}"
            )
        return names[name]()
    return ConstantThreshold(threshold)
