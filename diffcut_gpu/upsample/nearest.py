"""Feature-free upsampling of token labels: nearest token, or a bilinear majority vote.

``nearest_upsample``: pixel ``(y, x)`` takes the token whose cell contains the pixel centre,
``i = floor((y + 0.5) * h / H)`` (the ``nearest-exact`` rule); for integer scale factors this is exact
block replication. ``nearest_index`` computes that map in integers; it is the one implementation of the
rule in the package (``eval.labels.resize_labels`` and the CLI's label resize use it too).

``majority_upsample``: each label votes with its one-hot map, the votes are upsampled bilinearly and the
pixel takes the label with the largest vote among its four nearest tokens; boundaries come out as
smooth contours instead of token-sized staircases.
"""

from __future__ import annotations

import numpy as np
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

__all__ = ["majority_upsample", "nearest_index", "nearest_upsample"]


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out,)`` int64 source index of each output pixel: ``floor((i + 0.5) * n_in / n_out)``.

    Computed as ``(2 i + 1) n_in // (2 n_out)`` in integers: a float scale (torch's ``nearest-exact``
    rounds it to float32) can flip a pixel that lies exactly on a tie between two sources.
    """
    return (2 * np.arange(n_out, dtype=np.int64) + 1) * int(n_in) // (2 * int(n_out))


def nearest_upsample(labels: Tensor, output_size: tuple[int, int] | int) -> Tensor:
    """``(B, h, w)`` integer labels -> ``(B, H, W)`` int64 by nearest token (pixel-centre rule).

    Example:
        >>> nearest_upsample(torch.tensor([[[1, 2]]]), (2, 4))
        tensor([[[1, 1, 2, 2],
                 [1, 1, 2, 2]]])
    """
    labels = check_labels(labels)
    height, width = check_size(output_size)
    _, h, w = labels.shape
    rows = torch.from_numpy(nearest_index(h, height)).to(labels.device)
    cols = torch.from_numpy(nearest_index(w, width)).to(labels.device)
    return labels[:, rows[:, None], cols[None, :]]


def majority_upsample(
    labels: Tensor, output_size: tuple[int, int] | int, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> Tensor:
    """``(B, h, w)`` integer labels -> ``(B, H, W)`` int64 by the largest bilinear one-hot vote.

    Ties (a pixel exactly between tokens of different labels) go to the smaller label value.
    """
    labels = check_labels(labels)
    size = check_size(output_size)
    check_max_elements(max_elements)
    ids, values = compact_labels(labels)
    votes = F.one_hot(ids, values.numel()).permute(0, 3, 1, 2).float()  # (B, K, h, w)
    return values[upsample_argmax(votes, size, max_elements=max_elements)]
