"""The object that owns the attention buffers filled during a forward pass.

Recording processors (``processor.py``) and the feature hook (``capture.py``) write into an
``AttentionRecorder``; nothing is copied to the host. Two storage modes:

* ``per_layer=True``: one ``(B, N, N)`` buffer per recorded layer (``recorder.maps``);
* ``per_layer=False`` (default, less memory): one buffer per token grid holding the running mean of
  the layers on that grid (each layer adds ``1 / count`` of its map).

Buffers are allocated on first use and reused by later passes with the same shapes, so tensors read
from the recorder are overwritten by the next forward pass: clone them to keep them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from .probs import head_mean_attention

__all__ = ["AttentionRecorder"]

Grid = tuple[int, int]


class StopForward(Exception):
    """Raised inside the model once everything asked for is captured (private; caught by the capture)."""


class AttentionRecorder:
    """Buffers for head-averaged self-attention maps and one feature tensor.

    Args:
        layers: recorded layer name -> its token grid ``(h, w)`` (``None`` when unknown before the run:
            then it is read from a 4-D input or taken as a square grid).
        per_layer: keep one map per layer instead of one running mean per grid.
        chunk_size: queries per chunk in :func:`head_mean_attention` (``None``: no chunking).
        feature_module: name of the module whose output is stored as ``features`` (or ``None``).
        stop_early: raise ``StopForward`` as soon as every layer and the feature module have run.
    """

    def __init__(
        self,
        layers: Mapping[str, Grid | None],
        *,
        per_layer: bool = False,
        chunk_size: int | None = 1024,
        feature_module: str | None = None,
        stop_early: bool = False,
    ) -> None:
        self._buffers: dict[object, Tensor] = {}
        self.configure(
            layers,
            per_layer=per_layer,
            chunk_size=chunk_size,
            feature_module=feature_module,
            stop_early=stop_early,
        )

    def configure(
        self,
        layers: Mapping[str, Grid | None],
        *,
        per_layer: bool = False,
        chunk_size: int | None = 1024,
        feature_module: str | None = None,
        stop_early: bool = False,
    ) -> None:
        """(Re)set the layer choice and options; allocated buffers are kept for reuse."""
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
        self.layers: dict[str, Grid | None] = dict(layers)
        if not per_layer and any(g is None for g in self.layers.values()):
            unknown = [n for n, g in self.layers.items() if g is None]
            raise ValueError(
                f"layers: per_layer=False needs every layer's token grid up front, got none for "
                f"{unknown[:3]}; pass sample_size to capture_attention or use per_layer=True"
            )
        self._count: dict[Grid, int] = {}  # layers per grid, for the running mean
        for g in self.layers.values():
            if g is not None:
                self._count[g] = self._count.get(g, 0) + 1
        self.per_layer = per_layer
        self.chunk_size = chunk_size
        self.feature_module = feature_module
        self.stop_early = stop_early
        self.features: Tensor | None = None  # (B, N, C)
        self.feature_grid: Grid | None = None
        self._grid_of: dict[str, Grid] = {}  # grids seen at run time
        self._written: dict[object, int] = {}  # layers written into each buffer in this pass
        self._pending: set[str] = set()
        self.begin_pass()

    # -- pass bookkeeping -------------------------------------------------------------------------
    def begin_pass(self) -> None:
        """Start a new forward pass: the next records overwrite (not add to) the buffers."""
        self._written = {}
        self._pending = set(self.layers)
        if self.feature_module is not None:
            self._pending.add(self.feature_module)

    def _done(self, name: str) -> None:
        self._pending.discard(name)
        if self.stop_early and not self._pending:
            raise StopForward

    # -- writing ----------------------------------------------------------------------------------
    def grid_for(self, name: str, n_tokens: int, spatial: Grid | None = None) -> Grid:
        """The token grid of layer ``name`` for an input of ``n_tokens`` tokens (checked, host-side)."""
        grid = self.layers.get(name) or spatial
        if grid is None:
            side = math.isqrt(n_tokens)
            if side * side != n_tokens:
                raise ValueError(
                    f"{name}: expected a square token grid or a known (h, w), got {n_tokens} tokens; "
                    "pass sample_size=(h, w) of the latents to capture_attention"
                )
            grid = (side, side)
        if grid[0] * grid[1] != n_tokens:
            raise ValueError(
                f"{name}: expected {grid[0] * grid[1]} tokens for grid {grid}, got {n_tokens}; "
                "pass sample_size=(h, w) of the latents the model actually runs on"
            )
        self._grid_of[name] = grid
        return grid

    def _buffer(self, key: object, shape: tuple[int, ...], like: Tensor) -> Tensor:
        dtype = torch.promote_types(like.dtype, torch.float32)
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != like.device:
            buf = torch.empty(shape, dtype=dtype, device=like.device)
            self._buffers[key] = buf
        return buf

    def record(
        self,
        name: str,
        query: Tensor,
        key: Tensor,
        *,
        scale: float,
        grid: Grid,
        attn_mask: Tensor | None = None,
    ) -> None:
        """Write the head mean of ``softmax(scale Q K^T)`` of layer ``name`` into its buffer.

        ``query``/``key``: ``(B, heads, N, d)``. Called by the recording processor.
        """
        B, _, N, _ = query.shape
        if self.per_layer:
            bkey, weight = name, 1.0
        else:
            bkey, weight = grid, 1.0 / self._count[grid]
        first = self._written.get(bkey, 0) == 0
        buf = self._buffer(bkey, (B, N, key.shape[2]), query)
        head_mean_attention(
            query,
            key,
            scale=scale,
            chunk_size=self.chunk_size,
            attn_mask=attn_mask,
            out=buf,
            accumulate=not first,
            weight=weight,
        )
        self._written[bkey] = self._written.get(bkey, 0) + 1
        self._done(name)

    def store_features(self, output: object) -> None:
        """Keep a module's output as ``(B, N, C)`` features (a view, no copy). Called by a forward hook."""
        hidden = output
        if isinstance(hidden, (tuple, list)):
            hidden = hidden[0]
        hidden = getattr(hidden, "sample", hidden)
        if not isinstance(hidden, Tensor) or hidden.ndim not in (3, 4):
            raise ValueError(
                f"{self.feature_module}: expected a (B, C, h, w) or (B, N, C) output, "
                f"got {type(hidden).__name__}"
            )
        if hidden.ndim == 4:
            self.feature_grid = (hidden.shape[2], hidden.shape[3])
            hidden = hidden.flatten(2).transpose(1, 2)
        else:
            self.feature_grid = self.grid_for(str(self.feature_module), hidden.shape[1])
        self.features = hidden
        self._done(str(self.feature_module))

    # -- reading ----------------------------------------------------------------------------------
    @property
    def maps(self) -> dict[str, Tensor]:
        """Per-layer maps ``name -> (B, N, N)`` recorded in this pass (only with ``per_layer=True``)."""
        if not self.per_layer:
            raise RuntimeError("maps: per-layer maps are kept only with per_layer=True; use grid_maps()")
        return {n: self._buffers[n] for n in self.layers if self._written.get(n, 0) > 0}

    def grid_maps(self) -> dict[Grid, Tensor]:
        """Mean map of the recorded layers on each token grid: ``(h, w) -> (B, h*w, h*w)``."""
        if not self.per_layer:
            return {g: b for g, b in self._buffers.items() if self._written.get(g, 0) > 0}
        groups: dict[Grid, list[Tensor]] = {}
        for name, buf in self.maps.items():
            groups.setdefault(self._grid_of[name], []).append(buf)
        return {g: torch.stack(bufs).mean(0) if len(bufs) > 1 else bufs[0] for g, bufs in groups.items()}

    @property
    def grids(self) -> dict[str, Grid]:
        """Token grid of every layer recorded so far."""
        return dict(self._grid_of)
