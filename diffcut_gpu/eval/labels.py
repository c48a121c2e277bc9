"""Label-map plumbing shared by the metrics: input checks, nearest-neighbour resize, contingency tables.

Label maps are integer arrays whose values are ids, not quantities: a resize must never blend them, and
a table of co-occurrences (a contingency table) is the only thing any metric here needs from them. The
tables are counted with one ``torch.bincount`` on the device the labels live on; only the small
``(#labels, #labels)`` result is moved to the host by the callers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from diffcut_gpu.upsample.nearest import nearest_index

LabelArray = Tensor | np.ndarray

__all__ = ["LabelArray", "as_label_tensor", "compact_ids", "contingency_blocks", "resize_labels"]


def as_label_tensor(x: LabelArray, name: str, device: torch.device | None = None) -> Tensor:
    """Check an integer label map and return it as an ``int64`` tensor (on ``device`` if given).

    Accepts a ``torch.Tensor`` or a ``numpy.ndarray`` of any integer dtype; floats, bools, complex
    and empty arrays are refused, because a label map carries ids and every metric needs pixels.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise ValueError(f"{name}: expected an integer label array, got numpy dtype {x.dtype}; "
                             "cast predictions with .astype(np.int64) after taking the argmax")
        if x.dtype == np.uint64 and x.size and int(x.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"{name}: expected labels that fit in int64, got a uint64 value above 2**63-1")
        x = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64, copy=False))
    elif isinstance(x, Tensor):
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name}: expected an integer label tensor, got dtype {x.dtype}; "
                             "cast predictions with .long() after taking the argmax")
        x = x.long()
    else:
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty label map, got shape {tuple(x.shape)}")
    return x if device is None else x.to(device)


def resize_labels(labels: LabelArray, size: tuple[int, int]) -> LabelArray:
    """Nearest-neighbour resize of label maps ``(H, W)`` or ``(B, H, W)`` to ``size = (H', W')``.

    Output pixel ``i`` takes input pixel ``floor((i + 0.5) * H / H')`` (pixel centres aligned, the rule of
    PIL's ``NEAREST`` and torch's ``nearest-exact``; ``upsample.nearest.nearest_index``), computed in
    integers so ids are copied exactly, whatever their magnitude. Returns the same kind of array (tensor or
    ndarray) and dtype as the input. Use it to bring predictions to the ground-truth resolution before
    scoring, or token-size labels to the image size (the CLI's label files).
    """
    if not isinstance(labels, (Tensor, np.ndarray)):
        raise TypeError(f"labels: expected a torch.Tensor or numpy.ndarray, got {type(labels).__name__}")
    if labels.ndim not in (2, 3):
        raise ValueError(f"labels: expected shape (H, W) or (B, H, W), got {tuple(labels.shape)}")
    if len(size) != 2 or any(int(s) <= 0 for s in size):
        raise ValueError(f"size: expected two positive ints (H, W), got {tuple(size)}")
    h_in, w_in = labels.shape[-2:]
    h_out, w_out = int(size[0]), int(size[1])
    if h_in == 0 or w_in == 0:
        raise ValueError(f"labels: expected a non-empty label map, got shape {tuple(labels.shape)}")
    rows, cols = nearest_index(h_in, h_out), nearest_index(w_in, w_out)
    if isinstance(labels, np.ndarray):
        return labels[..., rows[:, None], cols[None, :]]
    r = torch.from_numpy(rows).to(labels.device)
    c = torch.from_numpy(cols).to(labels.device)
    return labels.index_select(-2, r).index_select(-1, c)


def compact_ids(values: Tensor, group: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Renumber labels to ``0..K-1`` jointly over groups, keeping groups apart.

    ``values (M,)`` int64 labels and ``group (M,)`` int64 group indices in ``[0, num_groups)`` (the image
    or annotator each pixel belongs to). Returns ``ids (M,)`` and ``counts (num_groups,)``: the distinct
    labels of group ``g`` get the consecutive ids ``offset_g .. offset_g + counts[g] - 1`` with
    ``offset = cumsum(counts) - counts``, in increasing label order. One ``torch.unique`` on the device.
    """
    if values.numel() == 0:
        return values.new_zeros(0), values.new_zeros(num_groups)
    lo = values.min()
    span = int(values.max()) - int(lo) + 1                                   # Python int: no int64 overflow
    if span > (2**62) // max(num_groups, 1):
        # Ids too spread to pack (group, label) in one int64: unique over pairs instead (rare, slower).
        _, ids = torch.unique(torch.stack([group, values], 1), dim=0, return_inverse=True)
        first = torch.zeros(int(ids.max()) + 1, dtype=torch.long, device=values.device)
        first.scatter_(0, ids, group)
        return ids, torch.bincount(first, minlength=num_groups)
    key = group * span + (values - lo)
    uniq, ids = torch.unique(key, return_inverse=True)
    return ids, torch.bincount(uniq // span, minlength=num_groups)


def contingency_blocks(row_ids: Tensor, row_counts: Tensor, col_ids: Tensor, num_cols: int) -> list[Tensor]:
    """Co-occurrence counts of compact row ids against column ids, split into one block per group.

    ``row_ids (M,)`` from :func:`compact_ids` (``row_counts (G,)`` labels per group), ``col_ids (M,)`` in
    ``[0, num_cols)``. Returns ``G`` int64 tensors on the input device, block ``g`` of shape
    ``(row_counts[g], num_cols)`` with entry ``[i, j]`` = number of pixels with row label ``i`` and
    column label ``j``. One ``torch.bincount`` for all groups.
    """
    total = int(row_counts.sum())
    table = torch.bincount(row_ids * num_cols + col_ids, minlength=total * num_cols).view(total, num_cols)
    return list(torch.split(table, row_counts.tolist(), dim=0))
