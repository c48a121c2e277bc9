"""Spectral core in plain torch: graphs, power walk, Fiedler vectors, sweep cut, recursive NCut."""

from .fiedler import FiedlerResult, fiedler
from .graph import (
    attention_row_affinity,
    cosine_affinity,
    power_walk,
    reversibilize,
    stationary_distribution,
    symmetrize,
)
from .hierarchy import Segmentation
from .recursion import recursive_ncut
from .subgraph import gather_subgraphs
from .sweep import ncut_value, sweep_cut
from .thresholds import (
    ConstantThreshold,
    LargestGapThreshold,
    NullModelThreshold,
    OtsuThreshold,
    ThresholdPolicy,
    make_policy,
)

__all__ = [
    "ConstantThreshold",
    "FiedlerResult",
    "LargestGapThreshold",
    "NullModelThreshold",
    "OtsuThreshold",
    "Segmentation",
    "ThresholdPolicy",
    "attention_row_affinity",
    "cosine_affinity",
    "fiedler",
    "gather_subgraphs",
    "make_policy",
    "ncut_value",
    "power_walk",
    "recursive_ncut",
    "reversibilize",
    "stationary_distribution",
    "sweep_cut",
    "symmetrize",
]
