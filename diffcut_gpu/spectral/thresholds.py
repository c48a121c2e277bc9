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

import numpy as np
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


class _PerImagePolicy:
    """Shared plumbing: one host transfer of the (small) candidate NCut values, a rule per image."""

    needs_full_hierarchy = True

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        has_children = (hierarchy.children[:, 0] >= 0).cpu().numpy()
        ncut = hierarchy.ncut.detach().cpu().numpy()
        image = hierarchy.node_image.cpu().numpy()
        out = np.empty(hierarchy.num_images, dtype=np.float64)
        for b in range(hierarchy.num_images):
            values = ncut[(image == b) & has_children & np.isfinite(ncut)]
            out[b] = self.threshold(np.sort(values))
        return torch.as_tensor(out, device=hierarchy.ncut.device)

    def threshold(self, values: np.ndarray) -> float:
        """Threshold from one image's sorted finite candidate NCut values."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# Candidate sets whose values span less than this carry no two populations: one segment.
_FLAT_SPREAD = 1e-6


class NullModelThreshold(_PerImagePolicy):
    """Split while NCut < 1, the value of any split of a structureless (fully mixed) walk."""

    needs_full_hierarchy = False

    def __call__(self, hierarchy: Segmentation) -> Tensor:
        return torch.ones(hierarchy.num_images, dtype=torch.float64, device=hierarchy.ncut.device)

    def threshold(self, values: np.ndarray) -> float:
        return 1.0


class OtsuThreshold(_PerImagePolicy):
    """Otsu split of the image's candidate NCut values; a single candidate is judged by the null rule."""

    def threshold(self, values: np.ndarray) -> float:
        if values.size == 0:
            return 0.0
        if values.size == 1:
            return 1.0
        if values[-1] - values[0] < _FLAT_SPREAD:
            return float(values[0])  # no structure: nothing is strictly below the common value
        k = np.arange(1, values.size)
        csum = np.cumsum(values)
        mean_lo = csum[:-1] / k
        mean_hi = (csum[-1] - csum[:-1]) / (values.size - k)
        between = k * (values.size - k) * (mean_hi - mean_lo) ** 2
        best = int(np.argmax(between))
        return float(0.5 * (values[best] + values[best + 1]))


class LargestGapThreshold(_PerImagePolicy):
    """Tau in the middle of the widest gap between consecutive sorted candidate values."""

    def threshold(self, values: np.ndarray) -> float:
        if values.size == 0:
            return 0.0
        if values.size == 1:
            return 1.0
        if values[-1] - values[0] < _FLAT_SPREAD:
            return float(values[0])
        gaps = np.diff(values)
        best = int(np.argmax(gaps))
        return float(0.5 * (values[best] + values[best + 1]))


DYNAMIC_POLICIES: dict[str, type[_PerImagePolicy]] = {
    "null": NullModelThreshold,
    "otsu": OtsuThreshold,
    "gap": LargestGapThreshold,
}

#: The policy that ``threshold="dynamic"`` means, chosen by measurement on BSDS500 train (docs/method.md).
DEFAULT_DYNAMIC = "otsu"


def make_policy(threshold: float | str | ThresholdPolicy) -> ThresholdPolicy:
    """A policy from a number (constant tau), a name ("dynamic", "null", "otsu", "gap") or a policy."""
    if isinstance(threshold, ThresholdPolicy) and not isinstance(threshold, (int, float, str)):
        return threshold
    if isinstance(threshold, str):
        name = DEFAULT_DYNAMIC if threshold == "dynamic" else threshold
        if name not in DYNAMIC_POLICIES:
            raise ValueError(
                f"threshold: expected a number, 'dynamic' or one of {sorted(DYNAMIC_POLICIES)}, got {threshold!r}"
            )
        return DYNAMIC_POLICIES[name]()
    return ConstantThreshold(threshold)
