"""A diffusers attention processor that also records head-averaged self-attention probabilities.

The layer output is computed step for step as diffusers' default ``AttnProcessor2_0`` does it
(projections, optional norms, ``F.scaled_dot_product_attention``, output projection, residual,
rescale), so a model runs unchanged while the processor is installed. Besides, the layer's
``mean_h softmax(Q_h K_h^T * attn.scale)`` is written, in query chunks, into the buffer its
``AttentionRecorder`` owns. No host copies, no synchronisation.

Given a custom processor (``inner``), it records the same map from the layer's own projections, then
hands the call, with every argument, to that processor, whose output is returned unchanged: a
custom processor is wrapped, never bypassed.
"""

from __future__ import annotations

import functools
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

        inner: the processor that computes the layer's output (a custom one); ``None``: compute it as
            diffusers' default ``AttnProcessor2_0`` does. With ``inner``, the recorded map is still
            ``mean_h softmax(Q_h K_h^T * attn.scale)`` of the layer's projections (after its norms);
            the output is ``inner``'s, and keyword arguments (``cross_attention_kwargs``) reach it.

    Install it with :func:`capture_attention` (which also restores the previous processors); by hand,
    ``attn.set_processor(RecordingAttnProcessor(recorder, name))``.
    """

    def __init__(self, recorder: AttentionRecorder, name: str, inner=None) -> None:
        self.recorder = recorder
        self.name = name
        self.inner = inner
        if inner is not None:
            # diffusers keeps only the cross_attention_kwargs that ``processor.__call__``'s signature names:
            # show it the inner processor's signature, so that its own arguments still reach it.
            def call(*args, **kwargs):
                return type(self).__call__(self, *args, **kwargs)

            self.__call__ = functools.update_wrapper(call, inner.__call__)

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
        if self.inner is not None:
            query, key, _, mask, grid, _ = self._project(attn, hidden_states, attention_mask, temb, value=False)
            self.recorder.record(self.name, query, key, scale=attn.scale, grid=grid, attn_mask=mask)
            if args:  # positional extras: keep diffusers' positional order
                return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
            given = {} if temb is None else {"temb": temb}  # a processor without temb must not receive it
            return self.inner(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, **given, **kwargs)

        residual = hidden_states
        query, key, value, attention_mask, grid, shape = self._project(attn, hidden_states, attention_mask, temb)
        batch_size, head_dim = query.shape[0], query.shape[-1]
        # The default processor leaves SDPA's scale at head_dim ** -0.5; pass attn.scale only if it differs.
        sdpa_scale = None if math.isclose(attn.scale, head_dim**-0.5) else attn.scale
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=sdpa_scale
        )
        self.recorder.record(self.name, query, key, scale=attn.scale, grid=grid, attn_mask=attention_mask)

        out = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if shape is not None:
            out = out.transpose(-1, -2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _project(self, attn, hidden_states: Tensor, attention_mask: Tensor | None, temb: Tensor | None,
                 value: bool = True):
        """The default processor's steps up to attention: norms, Q/K(/V) per head, the mask, the grid.

        Returns ``(query, key, value or None, mask, grid, 4-D input shape or None)``."""
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape = spatial = None
        if hidden_states.ndim == 4:
            shape = hidden_states.shape
            batch_size, channel, height, width = shape
            spatial = (height, width)
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = hidden_states.shape
        grid = self.recorder.grid_for(self.name, sequence_length, spatial)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        def heads(x: Tensor) -> Tensor:
            return x.view(batch_size, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        query, key = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states))
        values = heads(attn.to_v(hidden_states)) if value else None
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        return query, key, values, attention_mask, grid, shape
