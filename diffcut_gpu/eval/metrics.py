"""Unsupervised semantic segmentation scores: per-image Hungarian (or many-to-one) matching, mIoU, accuracy.

Protocol (DiffSeg / DiffCut; zero-shot predictions carry arbitrary segment ids, not classes):

1. Per image, count the confusion ``M[s, c]`` = pixels of predicted segment ``s`` with ground-truth class
   ``c``, over *valid* pixels only (``gt != ignore_index``; ignored pixels are dropped from both maps
   before anything else, so a segment lying wholly on ignored pixels does not exist).
2. Assign segments to classes, per image:

   * **Hungarian** (default): one-to-one matching between segments and the classes *present in this
     image's ground truth* maximising the summed **IoU** ``M[s,c] / (|s| + |c| - M[s,c])`` (DiffSeg's
     choice; pixel overlap would favour large segments), solved with
     ``scipy.optimize.linear_sum_assignment``. Pairs with zero overlap are not kept. Classes absent
     from the image are never candidates, so a surplus segment cannot be charged to a class the image
     does not contain.
   * **many-to-one**: every segment goes to the class it overlaps most in pixels (ties: smallest class
     id); several segments may share a class. Used for VOC / Context / COCO-Object with background.

3. Relabel: a matched segment's pixels are predicted as its class; pixels of an **unmatched** segment
   are predicted as *no class*. They are therefore false negatives of the class they cover and false
   positives of no class.
4. Accumulate per class over the whole dataset: ``TP_c`` (pred c, gt c), ``FP_c`` (pred c, gt another
   valid class), ``FN_c`` (gt c, pred not c). Then ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``,
   ``mIoU`` = mean over classes with a non-zero denominator (a class never seen nor predicted is
   left out and reported as ``nan``), ``pixel_accuracy = sum_c TP_c / #valid pixels``.

Confusions are counted with one ``torch.bincount`` per batch on the labels' device; only the small
``(#segments, C)`` matrices are moved to the host for the assignment.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from diffcut_gpu.eval.labels import LabelArray, as_label_tensor, compact_ids, contingency_blocks

__all__ = ["HungarianMIoU", "confusion_matrices", "hungarian_miou", "match_counts", "match_segments"]


def _linear_sum_assignment():
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as err:  # scipy is a core dependency, but keep the failure readable
        raise ImportError("HungarianMIoU needs scipy: pip install diffcut-gpu (scipy>=1.10 is a core "
                          "dependency) or pip install scipy") from err
    return linear_sum_assignment


def _pair(pred: LabelArray, gt: LabelArray) -> tuple[Tensor, Tensor]:
    """Check and convert a (pred, gt) pair to int64 ``(B, H, W)`` tensors on a common device."""
    device = None
    if isinstance(pred, Tensor) and isinstance(gt, Tensor) and pred.device != gt.device:
        raise ValueError(f"pred, gt: expected tensors on one device, got {pred.device} and {gt.device}")
    if isinstance(gt, Tensor):
        device = gt.device
    elif isinstance(pred, Tensor):
        device = pred.device
    p = as_label_tensor(pred, "pred", device)
    g = as_label_tensor(gt, "gt", device)
    if p.shape != g.shape:
        raise ValueError(f"pred: expected the shape of gt {tuple(g.shape)}, got {tuple(p.shape)}; "
                         "bring predictions to the label resolution with resize_labels(pred, gt.shape[-2:])")
    if p.ndim not in (2, 3):
        raise ValueError(f"pred: expected shape (H, W) or (B, H, W), got {tuple(p.shape)}")
    if p.ndim == 2:
        p, g = p[None], g[None]
    return p, g


def confusion_matrices(pred: LabelArray, gt: LabelArray, num_classes: int,
                       ignore_index: int | None = 255) -> list[Tensor]:
    """Per-image confusion between predicted segments and ground-truth classes.

    ``pred``, ``gt``: ``(H, W)`` or ``(B, H, W)`` integer maps (tensor or ndarray); ``pred`` ids are
    arbitrary, ``gt`` holds ids in ``[0, num_classes)`` or ``ignore_index``. Returns ``B`` int64 tensors
    on the labels' device, matrix ``b`` of shape ``(S_b, num_classes)`` with ``S_b`` the number of
    distinct predicted ids on valid pixels, rows in increasing id order.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    p, g = _pair(pred, gt)
    valid = g != ignore_index if ignore_index is not None else torch.ones_like(g, dtype=torch.bool)
    gv = g[valid]
    if gv.numel() and (int(gv.min()) < 0 or int(gv.max()) >= num_classes):
        raise ValueError(f"gt: expected class ids in [0, {num_classes}) or ignore_index={ignore_index}, got "
                         f"values in [{int(gv.min())}, {int(gv.max())}]; map dataset ids to classes first")
    batch = torch.arange(p.shape[0], device=p.device).view(-1, 1, 1).expand_as(p)[valid]
    seg, counts = compact_ids(p[valid], batch, p.shape[0])
    return contingency_blocks(seg, counts, gv, num_classes)


def match_segments(confusion: np.ndarray | Tensor, many_to_one: bool = False) -> np.ndarray:
    """Assign each predicted segment (row) of a ``(S, C)`` confusion to a class or to none.

    Hungarian: IoU-maximising one-to-one matching among the classes with ground-truth pixels, pairs
    with zero overlap dropped. Many-to-one: the class of largest overlap. Returns ``(S,)`` int64 class
    ids, ``-1`` for an unmatched segment.
    """
    m = confusion.detach().cpu().numpy() if isinstance(confusion, Tensor) else np.asarray(confusion)
    if m.ndim != 2:
        raise ValueError(f"confusion: expected shape (S, C), got {m.shape}")
    m = m.astype(np.int64, copy=False)
    assign = np.full(m.shape[0], -1, dtype=np.int64)
    if m.shape[0] == 0:
        return assign
    if many_to_one:
        best = m.argmax(1)
        hit = m[np.arange(m.shape[0]), best] > 0
        assign[hit] = best[hit]
        return assign
    present = np.flatnonzero(m.sum(0) > 0)
    if present.size == 0:
        return assign
    inter = m[:, present].astype(np.float64)
    union = m.sum(1, keepdims=True) + m[:, present].sum(0, keepdims=True) - inter
    iou = inter / np.maximum(union, 1)
    rows, cols = _linear_sum_assignment()(iou, maximize=True)
    keep = inter[rows, cols] > 0
    assign[rows[keep]] = present[cols[keep]]
    return assign


def match_counts(confusion: np.ndarray | Tensor, many_to_one: bool = False) -> tuple[np.ndarray, ...]:
    """Per-class ``(tp, fp, fn)`` int64 ``(C,)`` of one image's ``(S, C)`` confusion after matching.

    Segments are assigned with :func:`match_segments`; a matched segment's pixels are predictions of its
    class, an unmatched segment's pixels are false negatives of the classes they cover (protocol step 3).
    """
    m = confusion.detach().cpu().numpy() if isinstance(confusion, Tensor) else np.asarray(confusion)
    m = m.astype(np.int64, copy=False)
    assign = match_segments(m, many_to_one)
    hit = assign >= 0
    rows = np.flatnonzero(hit)
    tp_rows = m[rows, assign[hit]]
    tp = np.bincount(assign[hit], weights=tp_rows, minlength=m.shape[1]).astype(np.int64)
    fp = np.bincount(assign[hit], weights=m[rows].sum(1) - tp_rows, minlength=m.shape[1]).astype(np.int64)
    return tp, fp, m.sum(0) - tp


class HungarianMIoU:
    """Dataset-level accumulator of the unsupervised segmentation protocol (see the module docstring).

    Args:
        num_classes: number of ground-truth classes ``C`` (ids ``0..C-1``).
        ignore_index: ground-truth id of pixels left out of the score (``None``: none ignored).
        many_to_one: assign every segment to its majority class instead of Hungarian matching.

    Example:
        >>> metric = HungarianMIoU(27)
        >>> metric.update(pred, gt)          # (H, W) or (B, H, W), torch or numpy, any device
        >>> metric.compute()["mIoU"]
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, many_to_one: bool = False) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ValueError(f"ignore_index: expected a value outside the class ids [0, {num_classes}), "
                             f"got {ignore_index}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.many_to_one = many_to_one
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.tp = np.zeros(self.num_classes, dtype=np.int64)
        self.fp = np.zeros(self.num_classes, dtype=np.int64)
        self.fn = np.zeros(self.num_classes, dtype=np.int64)
        self.num_valid = 0
        self.num_images = 0

    def update(self, pred: LabelArray, gt: LabelArray) -> None:
        """Add one image ``(H, W)`` or a batch ``(B, H, W)``: match per image, accumulate TP/FP/FN."""
        for conf in confusion_matrices(pred, gt, self.num_classes, self.ignore_index):
            self.add_counts(*match_counts(conf, self.many_to_one))

    def add_counts(self, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> None:
        """Add one image's per-class counts, as returned by :func:`match_counts`."""
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.num_valid += int(tp.sum() + fn.sum())
        self.num_images += 1

    def compute(self) -> dict[str, float | list[float]]:
        """Return ``dict(mIoU, pixel_accuracy, per_class_iou=list of C floats)``, all in [0, 1]."""
        if self.num_images == 0:
            raise RuntimeError("HungarianMIoU.compute: no image was added; call update(pred, gt) first")
        if self.num_valid == 0:
            raise RuntimeError("HungarianMIoU.compute: every pixel seen so far is ignore_index; "
                               "nothing to score")
        denom = self.tp + self.fp + self.fn
        iou = np.where(denom > 0, self.tp / np.maximum(denom, 1), np.nan)
        seen = denom > 0
        return {
            "mIoU": float(iou[seen].mean()) if seen.any() else math.nan,
            "pixel_accuracy": float(self.tp.sum() / self.num_valid),
            "per_class_iou": [float(v) for v in iou],
        }


def hungarian_miou(pred: LabelArray, gt: LabelArray, num_classes: int, ignore_index: int | None = 255,
                   many_to_one: bool = False) -> dict[str, float | list[float]]:
    """One-shot :class:`HungarianMIoU` over ``(H, W)`` or ``(B, H, W)`` maps (per-image matching)."""
    metric = HungarianMIoU(num_classes, ignore_index, many_to_one)
    metric.update(pred, gt)
    return metric.compute()
