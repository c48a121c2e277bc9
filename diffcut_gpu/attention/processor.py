"""A diffusers attention processor that also records head-averaged self-attention probabilities.

The layer output is computed step for step as diffusers' default ``AttnProcessor2_0`` does it
(projections, optional norms, ``F.scaled_dot_product_attention``, output projection, residual,
rescale), so a model runs unchanged while the processor is installed. Besides, the layer's
``mean_h softmax(Q_h K_h^T * attn.scale)`` is written, in query chunks, into the buffer its
``AttentionRecorder`` owns. No host copies, no synchronisation.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from .recorder import AttentionRecorder

__all__ = ["RecordingAttnProcessor"]


class RecordingAttnProcessor:
    """Self-attention processor for a diffusers ``Attention`` layer that records its attention map.

    Args:
        recorder: owner of the buffers; the map lands in ``recorder.maps[name]`` (``per_layer=True``)
            or in the running mean of its grid (``recorder.grid_maps()``).
        name: the layer's module name, e.g. ``"down_blocks.1.attentions.0.transformer_blocks.0.attn1"``.

    Install it with :func:`capture_attention` (which also restores the previous processors); by hand,
    ``attn.set_processor(RecordingAttnProcessor(recorder, name))``.
    """

    def __init__(self, recorder: AttentionRecorder, name: str) -> None:
        self.recorder = recorder
        self.name = name

    def __call__(
        self,
        attn,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        if encoder_hidden_states is not None:
            raise ValueError(
                f"{self.name}: expected a self-attention call (encoder_hidden_states=None), got "
                "cross-attention inputs; record only self-attention layers (attn1)"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        spatial = None
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            spatial = (height, width)
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        grid = self.recorder.grid_for(self.name, sequence_length, spatial)

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        # The default processor leaves SDPA's scale at head_dim ** -0.5; pass attn.scale only if it differs.
        sdpa_scale = None if math.isclose(attn.scale, head_dim**-0.5) else attn.scale
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=sdpa_scale
        )
        self.recorder.record(self.name, query, key, scale=attn.scale, grid=grid, attn_mask=attention_mask)

        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor
