"""Concept assignment (DiffCut): each pixel takes the segment whose mean feature it resembles most.

For image ``b`` with token labels ``l: (h, w)`` and L2-normalised token features ``f_i``:

    c_s = mean_{i : l_i = s} f_i,   c_s <- c_s / |c_s|                  # one concept per segment
    F_up = bilinear(f, (H, W))                                           # upsampled feature map
    label(p) = argmax_{s present in image b} cos(F_up(p), c_s)

Bilinear upsampling is linear and ``|F_up(p)| > 0`` does not change the argmax, so the scores are
computed on the token grid, ``S = f c^T: (B, N, K)``, and only ``S`` is upsampled (chunked over output
rows): memory ``O(B K H W / chunks)`` instead of ``O(B C H W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffcut_gpu.upsample._common import (
    DEFAULT_MAX_ELEMENTS,
    check_labels,
    check_max_elements,
    check_size,
    compact_labels,
    upsample_argmax,
)

__all__ = ["concept_assignment", "segment_concepts"]


def segment_concepts(ids: Tensor, features: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """Unit-norm mean of the L2-normalised features of each segment, per image.

    Args:
        ids: ``(B, N)`` int64 segment ids in ``[0, num_segments)``.
        features: ``(B, N, C)`` float token features.
        num_segments: ``K``.

    Returns:
        ``(concepts (B, K, C), counts (B, K))``; a segment absent from image ``b`` has ``counts == 0``
        and a zero concept.
    """
    batch, _, channels = features.shape
    f = F.normalize(features, dim=-1)
    sums = f.new_zeros(batch, num_segments, channels)
    sums.scatter_add_(1, ids.unsqueeze(-1).expand(-1, -1, channels), f)
    counts = f.new_zeros(batch, num_segments)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=f.dtype))
    # The mean's norm does not matter for cosine; normalising the sum is the same direction.
    return F.normalize(sums, dim=-1), counts


def concept_assignment(
    labels: Tensor,
    features: Tensor,
    output_size: tuple[int, int] | int,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """Upsample token labels to pixels by cosine similarity to per-segment mean features.

    Args:
        labels: ``(B, h, w)`` integer token labels (any values; they are kept as given).
        features: ``(B, h * w, C)`` float token features, row-major on the ``(h, w)`` grid.
        output_size: ``(H, W)`` pixels.
        max_elements: bound on the temporary ``(B, K, rows, W)`` score slab (chunking over rows).

    Returns:
        ``(B, H, W)`` int64 labels; pixel labels of image ``b`` are among the labels of image ``b``.

    Example:
        >>> labels = torch.tensor([[[0, 1], [0, 1]]])
        >>> feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
        >>> concept_assignment(labels, feats, (2, 4))
        tensor([[[0, 0, 1, 1],
                 [0, 0, 1, 1]]])
    """
    labels = check_labels(labels)
    size = check_size(output_size)
    check_max_elements(max_elements)
    batch, h, w = labels.shape
    if not isinstance(features, Tensor) or features.ndim != 3 or not features.is_floating_point():
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features: expected a float tensor (B, N, C), got {got}")
    if features.shape[:2] != (batch, h * w) or features.shape[2] == 0:
        raise ValueError(
            f"features: expected shape ({batch}, {h * w}, C) to match labels {tuple(labels.shape)}, "
            f"got {tuple(features.shape)}"
        )
    if features.device != labels.device:
        raise ValueError(f"features: expected device {labels.device} (that of labels), got {features.device}")

    feats = features.to(torch.promote_types(features.dtype, torch.float32))
    ids, values = compact_labels(labels)
    ids = ids.view(batch, h * w)
    concepts, counts = segment_concepts(ids, feats, values.numel())
    scores = torch.bmm(F.normalize(feats, dim=-1), concepts.transpose(1, 2))  # (B, N, K)
    scores = scores.transpose(1, 2).reshape(batch, -1, h, w)
    winner = upsample_argmax(scores, size, counts > 0, max_elements=max_elements)
    return values[winner]
