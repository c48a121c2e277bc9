"""Token labels to pixel labels: concept assignment, nearest / majority modes, PAMR refinement."""

from diffcut_gpu.upsample.concept import concept_assignment, segment_concepts
from diffcut_gpu.upsample.labels import MODES, upsample_labels
from diffcut_gpu.upsample.nearest import majority_upsample, nearest_upsample
from diffcut_gpu.upsample.pamr import DEFAULT_DILATIONS, pamr, pamr_affinity, pamr_labels

__all__ = [
    "DEFAULT_DILATIONS",
    "MODES",
    "concept_assignment",
    "majority_upsample",
    "nearest_upsample",
    "pamr",
    "pamr_affinity",
    "pamr_labels",
    "segment_concepts",
    "upsample_labels",
]
