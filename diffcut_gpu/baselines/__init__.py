"""Re-implementations of peer methods, run on the same inputs for benchmarks and evaluation."""

from .diffcut_style import diffcut_style_ncut
from .kmeans import kmeans_segments

__all__ = ["diffcut_style_ncut", "kmeans_segments"]
