"""diffcut-gpu: zero-shot segmentation by batched recursive random-walk Normalized Cuts.

``import diffcut_gpu`` needs only torch and numpy. Backbones (diffusers, transformers), CUDA kernels
(CuPy) and evaluation (scipy) are imported when first used.
"""

from .modules import RWNCut, RWNCutOutput
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

__version__ = "0.1.0"

__all__ = [
    "ConstantThreshold",
    "FiedlerResult",
    "LargestGapThreshold",
    "NullModelThreshold",
    "OtsuThreshold",
    "RWNCut",
    "RWNCutOutput",
    "Segmentation",
    "ThresholdPolicy",
    "attention_row_affinity",
    "cosine_affinity",
    "fiedler",
    "make_policy",
    "ncut_value",
    "power_walk",
    "recursive_ncut",
    "reversibilize",
    "stationary_distribution",
    "sweep_cut",
    "symmetrize",
]
