"""Scores of one image: region scores against BSDS annotators, or matched-class counts against a class map.

Region datasets (BSDS500: several annotators, region maps, no class ids): one contingency table per
annotator gives covering, PRI and VI (``bsds_metrics.annotator_mean``) and the Hungarian mIoU / pixel
accuracy with that annotator's regions as the classes of the image (``metrics.match_counts``: IoU-maximising
one-to-one matching, an unmatched region has IoU 0, mIoU = mean over the annotator's regions). Each
score is averaged over annotators.

Class datasets (COCO-Stuff-27, Cityscapes-27, label folders: one ``(H, W)`` class map, 255 ignored): the
per-image matching of the unsupervised protocol (``metrics.match_counts``); the per-class counts are
summed over the dataset by ``HungarianMIoU.add_counts`` for the reported mIoU and pixel accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffcut_gpu.eval.bsds_metrics import annotator_mean
from diffcut_gpu.eval.labels import compact_ids, contingency_blocks
from diffcut_gpu.eval.metrics import confusion_matrices, match_counts

__all__ = ["REGION_SCORES", "GroundTruth", "class_counts", "infer_num_classes", "region_scores"]

#: What ``region_scores`` returns, in the order of the results table.
REGION_SCORES = ("covering", "pri", "vi", "miou", "pixel_accuracy")


@dataclass
class GroundTruth:
    """Annotator region maps of one image, compacted: region ids of annotator k are offset_k + 0..R_k-1."""

    ids: Tensor  # (K * H * W,) int64
    counts: list[int]  # R_k per annotator
    shape: tuple[int, int]

    @classmethod
    def from_maps(cls, gts: Sequence[Tensor], device: torch.device | str = "cpu") -> GroundTruth:
        if len(gts) == 0:
            raise ValueError("gts: expected at least one (H, W) region map, got none")
        shape = tuple(gts[0].shape)
        if any(tuple(g.shape) != shape for g in gts):
            raise ValueError(f"gts: expected region maps of one shape, got {[tuple(g.shape) for g in gts]}")
        values = torch.stack([torch.as_tensor(g) for g in gts]).to(device=device, dtype=torch.long)
        group = torch.arange(len(gts), device=values.device).repeat_interleave(values[0].numel())
        ids, counts = compact_ids(values.reshape(-1), group, len(gts))
        return cls(ids=ids, counts=counts.tolist(), shape=shape)


def region_scores(pred: Tensor, gt: GroundTruth | Sequence[Tensor]) -> dict[str, float]:
    """Covering, PRI, VI, Hungarian mIoU and pixel accuracy of one ``(H, W)`` prediction, annotator mean.

    One contingency table per annotator (one ``bincount`` for all); see the module docstring.
    """
    if not isinstance(gt, GroundTruth):
        gt = GroundTruth.from_maps(gt, pred.device)
    if tuple(pred.shape) != gt.shape:
        raise ValueError(f"pred: expected the ground-truth shape {gt.shape}, got {tuple(pred.shape)}")
    _, pred_ids = torch.unique(pred.reshape(-1).to(gt.ids.device), return_inverse=True)
    k = len(gt.counts)
    tables = [t.cpu() for t in contingency_blocks(gt.ids, torch.tensor(gt.counts), pred_ids.repeat(k),
                                                   int(pred_ids.max()) + 1)]
    scores = annotator_mean(tables)
    miou, accuracy = [], []
    for table in tables:  # (R regions, S segments)
        tp, fp, fn = match_counts(table.T)
        miou.append(float(np.mean(tp / (tp + fp + fn))))
        accuracy.append(float(tp.sum() / int(table.sum())))
    return {**scores, "miou": float(np.mean(miou)), "pixel_accuracy": float(np.mean(accuracy))}


def class_counts(pred: Tensor, gt: Tensor, num_classes: int, ignore_index: int = 255) -> dict:
    """Matched per-class counts of one ``(H, W)`` prediction against a class map, and the image's scores.

    Returns ``dict(miou, pixel_accuracy, counts=(tp, fp, fn))``: the image's mIoU over the classes it
    contains or predicts, its pixel accuracy over valid pixels, and the ``(C,)`` counts for the dataset sum.
    """
    if tuple(pred.shape) != tuple(gt.shape):
        raise ValueError(f"pred: expected the ground-truth shape {tuple(gt.shape)}, got {tuple(pred.shape)}")
    tp, fp, fn = match_counts(confusion_matrices(pred, gt.to(pred.device), num_classes, ignore_index)[0])
    denom = tp + fp + fn
    seen = denom > 0
    valid = int(tp.sum() + fn.sum())
    return {
        "miou": float(np.mean(tp[seen] / denom[seen])) if seen.any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / valid) if valid else float("nan"),
        "counts": (tp, fp, fn),
    }


def infer_num_classes(dataset, ignore_index: int = 255) -> int:
    """Number of classes of a class-map dataset: ``len(dataset.CLASSES)``, else 1 + the largest label id.

    Any count at least that large gives the same scores: a class that no image contains is never matched
    and is left out of the mIoU.
    """
    classes = getattr(dataset, "CLASSES", None)
    if classes is not None:
        return len(classes)
    top = -1
    for i in range(len(dataset)):
        gt = dataset[i]["gt"]
        valid = gt[gt != ignore_index]
        if valid.numel():
            top = max(top, int(valid.max()))
    if top < 0:
        raise ValueError(f"dataset: expected labelled pixels (ids other than {ignore_index}), found none")
    return top + 1
