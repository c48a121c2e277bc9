"""A null model for "is this split significant?": the NCut that structureless images get from the same backbone.

The reversible walk's NCut of a split is the sum of the two sides' escape probabilities. With no
structure at all (a fully mixed walk, ``P = 1 pi^T``) every split has NCut 1: that is the ``null`` policy.
A backbone's attention is not fully mixed even on a blank image: it carries the token positions, so a
blank 32x32 DINOv2 grid still has splits of NCut about 0.9, and a rule "split while NCut < 1" cuts a
grey image into dozens of segments. The null model here is therefore measured, not assumed: the graph
the same backbone builds for images with no content (a constant grey image and uniform noise, at the
same pixel size, so the same token grid) is cut with the same recursion, and the smallest NCut of any
candidate split of those hierarchies is the **null bound**: no structureless input produced a split
below it. A split of a real image is significant when its NCut is below the null bound.

``thresholds.NullBoundThreshold`` (``threshold="dynamic"``) applies the bound on top of a base policy
(log-Otsu by default, which picks the granularity among significant splits): per image
tau = min(base tau, null bound). ``DiffCut`` calibrates the bound once per backbone and input size
(``calibrate_null``) and caches it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .hierarchy import Segmentation

__all__ = ["calibrate_null", "null_bound_of", "structureless_images"]


def structureless_images(height: int, width: int, *, device=None, dtype=torch.float32, seed: int = 0) -> Tensor:
    """(2, 3, H, W) in [0, 1]: a constant mid-grey image and uniform noise (``seed``), the null inputs."""
    grey = torch.full((3, height, width), 0.5, dtype=dtype, device=device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.rand((3, height, width), generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)
    return torch.stack([grey, noise])


def null_bound_of(hierarchy: Segmentation) -> float:
    """Smallest finite candidate NCut over all images of ``hierarchy`` (1.0 when there is none).

    1.0 is the fully mixed walk's NCut, so the bound is never above the structureless-walk rule.
    """
    cand = (hierarchy.children[:, 0] >= 0) & torch.isfinite(hierarchy.ncut)
    if not bool(cand.any()):
        return 1.0
    return min(1.0, float(hierarchy.ncut[cand].min()))


def calibrate_null(
    backbone: Callable[[Tensor], object],
    cut: Callable[[Tensor], Segmentation],
    height: int,
    width: int,
    *,
    device=None,
    dtype=torch.float32,
) -> float:
    """The null bound of ``backbone`` at input size (H, W): ``null_bound_of`` the structureless images' cuts.

    Args:
        backbone: images (B, 3, H, W) in [0, 1] -> object with ``attention``/``features``.
        cut: the backbone output -> ``Segmentation`` with the full candidate hierarchy (same graph and
            recursion settings as the real images).
    """
    images = structureless_images(height, width, device=device, dtype=dtype)
    return null_bound_of(cut(backbone(images)))
