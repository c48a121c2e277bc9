"""Evaluation: unsupervised mIoU / pixel accuracy, BSDS covering / PRI / VI, and dataset readers.

The evaluation loop behind ``diffcut-gpu eval`` is in ``eval.runner`` (``evaluate``), with the backbone
cache in ``eval.backbone_cache``, the method names in ``eval.methods`` and one image's scores in
``eval.scoring`` (docs/evaluation.md).
"""

from diffcut_gpu.eval.bsds_metrics import BSDSMetrics, bsds_scores, contingency_table, scores_from_contingency
from diffcut_gpu.eval.datasets import (
    BSDS500,
    Cityscapes27,
    COCOStuff27,
    ImageFolderWithLabels,
    read_label_png,
    read_rgb,
)
from diffcut_gpu.eval.label_tables import (
    CITYSCAPES27_CLASSES,
    CITYSCAPES_ID_TO_27,
    COCOSTUFF27_CLASSES,
    COCOSTUFF_FINE_TO_COARSE,
)
from diffcut_gpu.eval.labels import resize_labels
from diffcut_gpu.eval.metrics import HungarianMIoU, confusion_matrices, hungarian_miou, match_segments

__all__ = [
    "BSDS500",
    "CITYSCAPES27_CLASSES",
    "CITYSCAPES_ID_TO_27",
    "COCOSTUFF27_CLASSES",
    "COCOSTUFF_FINE_TO_COARSE",
    "BSDSMetrics",
    "COCOStuff27",
    "Cityscapes27",
    "HungarianMIoU",
    "ImageFolderWithLabels",
    "bsds_scores",
    "confusion_matrices",
    "contingency_table",
    "hungarian_miou",
    "match_segments",
    "read_label_png",
    "read_rgb",
    "resize_labels",
    "scores_from_contingency",
]
