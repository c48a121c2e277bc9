"""Spectral core in plain torch: graphs, power walk, Fiedler vectors, sweep cut, recursive NCut."""

from . import dynamic_extra  # noqa: F401  registers the experimental policy names
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
    LogOtsuThreshold,
    NullBoundThreshold,
    NullModelThreshold,
    OtsuThreshold,
    ThresholdPolicy,
    make_policy,
    policy_names,
)

__all__ = [
    "ConstantThreshold",
    "FiedlerResult",
    "LargestGapThreshold",
    "LogOtsuThreshold",
    "NullBoundThreshold",
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
    "policy_names",
    "power_walk",
    "recursive_ncut",
    "reversibilize",
    "stationary_distribution",
    "sweep_cut",
    "symmetrize",
]
