"""diffcut-gpu: zero-shot segmentation by batched recursive random-walk Normalized Cuts.

``import diffcut_gpu`` needs only torch and numpy. Backbones (diffusers, transformers), CUDA kernels
(CuPy) and evaluation (scipy) are imported when first used.
"""

from .attention import aggregate_attention, capture_attention, hf_attention_to_transition
from .eval import (
    BSDS500,
    BSDSMetrics,
    Cityscapes27,
    COCOStuff27,
    HungarianMIoU,
    ImageFolderWithLabels,
    bsds_scores,
    hungarian_miou,
)
from .models import BackboneOutput, DiffusionBackbone, ViTBackbone
from .modules import CutConfig, DiffCut, DiffCutOutput, RWNCut, RWNCutOutput
from .spectral import (
    ConstantThreshold,
    FiedlerResult,
    LargestGapThreshold,
    NullModelThreshold,
    OtsuThreshold,
    Segmentation,
    ThresholdPolicy,
    attention_row_affinity,
    cosine_affinity,
    fiedler,
    make_policy,
    ncut_value,
    power_walk,
    recursive_ncut,
    reversibilize,
    stationary_distribution,
    sweep_cut,
    symmetrize,
)
from .upsample import upsample_labels

__version__ = "0.1.0"

__all__ = [
    "BSDS500",
    "BSDSMetrics",
    "BackboneOutput",
    "COCOStuff27",
    "Cityscapes27",
    "ConstantThreshold",
    "CutConfig",
    "DiffCut",
    "DiffCutOutput",
    "DiffusionBackbone",
    "FiedlerResult",
    "HungarianMIoU",
    "ImageFolderWithLabels",
    "LargestGapThreshold",
    "NullModelThreshold",
    "OtsuThreshold",
    "RWNCut",
    "RWNCutOutput",
    "Segmentation",
    "ThresholdPolicy",
    "ViTBackbone",
    "aggregate_attention",
    "attention_row_affinity",
    "bsds_scores",
    "capture_attention",
    "cosine_affinity",
    "fiedler",
    "hf_attention_to_transition",
    "hungarian_miou",
    "make_policy",
    "ncut_value",
    "power_walk",
    "recursive_ncut",
    "reversibilize",
    "stationary_distribution",
    "sweep_cut",
    "symmetrize",
    "upsample_labels",
]
