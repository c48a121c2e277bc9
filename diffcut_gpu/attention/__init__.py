"""Attention capture for diffusers models and multi-resolution aggregation of attention maps."""

from .aggregate import aggregate_attention, resample_matrix, resize_transition
from .capture import (
    capture_attention,
    default_feature_module,
    layer_grid,
    run_until_captured,
    self_attention_layers,
)
from .probs import head_mean_attention, head_mean_attention_ref
from .processor import RecordingAttnProcessor
from .recorder import AttentionRecorder

__all__ = [
    "AttentionRecorder",
    "RecordingAttnProcessor",
    "aggregate_attention",
    "capture_attention",
    "default_feature_module",
    "head_mean_attention",
    "head_mean_attention_ref",
    "layer_grid",
    "resample_matrix",
    "resize_transition",
    "run_until_captured",
    "self_attention_layers",
]
