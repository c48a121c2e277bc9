"""Attention capture for diffusers models, multi-resolution aggregation, and attention you already have
(Hugging Face ``outputs.attentions``) turned into the row-stochastic input of the cut."""

from .aggregate import aggregate_attention, resample_matrix, resize_transition
from .capture import (
    capture_attention,
    default_feature_module,
    layer_grid,
    run_until_captured,
    self_attention_layers,
)
from .hf import attention_to_transition, hf_attention_to_transition, row_tolerance, special_tokens
from .probs import head_mean_attention, head_mean_attention_ref
from .processor import RecordingAttnProcessor
from .recorder import AttentionRecorder

__all__ = [
    "AttentionRecorder",
    "RecordingAttnProcessor",
    "aggregate_attention",
    "attention_to_transition",
    "capture_attention",
    "default_feature_module",
    "head_mean_attention",
    "head_mean_attention_ref",
    "hf_attention_to_transition",
    "layer_grid",
    "resample_matrix",
    "resize_transition",
    "row_tolerance",
    "run_until_captured",
    "self_attention_layers",
    "special_tokens",
]
