"""diffcut-gpu: zero-shot segmentation by batched recursive random-walk Normalized Cuts.

The top level holds the solver (``spectral``), the modules (``RWNCut``, ``DiffCut``), the backbones and the
attention capture API. Metrics, dataset readers and label tables live in ``diffcut_gpu.eval``.
``import diffcut_gpu`` needs only torch and numpy. Backbones (diffusers, transformers), CUDA kernels
(CuPy) and evaluation (scipy) are imported when first used.
"""

from .attention import aggregate_attention, capture_attention, hf_attention_to_transition
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
    "BackboneOutput",
    "ConstantThreshold",
    "CutConfig",
    "DiffCut",
    "DiffCutOutput",
    "DiffusionBackbone",
    "FiedlerResult",
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
    "capture_attention",
    "cosine_affinity",
    "fiedler",
    "hf_attention_to_transition",
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
