"""``RWNCut``: the drop-in module from attention or token features to segment labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_grid, check_int, check_tensor
from ..kernels.dispatch import requested_backend
from ..spectral import (
    Segmentation,
    ThresholdPolicy,
    attention_row_affinity,
    cosine_affinity,
    power_walk,
    recursive_ncut,
    reversibilize,
    symmetrize,
)

Source = Literal["auto", "attention", "features", "both"]
GraphKind = Literal["reversible", "symmetric", "rows"]


@dataclass
class RWNCutOutput:
    """Everything one call produced: token labels, pixel labels (if asked) and the hierarchy."""

    token_labels: Tensor  # (B, h, w) int64
    labels: Tensor | None  # (B, H, W) int64 when an output size was given
    segmentation: Segmentation
    graph: Tensor  # (B, N, N) the graph that was cut


class RWNCut(nn.Module):
    """Recursive random-walk Normalized Cuts as a ``torch.nn.Module``.

    Args:
        source: what ``forward`` receives: "attention" (B, N, N) or (B, heads, N, N) row-stochastic,
            "features" (B, N, C), "both" (attention in ``x`` plus ``features=``: the mean of the attention
            graph and the feature graph, each scaled to mean degree 1), or "auto" (4-D or square
            row-stochastic -> attention, else features).
        graph: for attention, "reversible" (Pi P + P^T Pi)/2 whose NCut is the walk's escape probability,
            "symmetric" (P + P^T)/2, or "rows" (cosine of attention rows, min-max^alpha).
        power: k of the power walk P^k (attention only); larger k gives coarser segments.
        alpha: exponent of the min-max cosine affinity (features and "rows").
        threshold: constant tau, "dynamic", a policy name or a ``ThresholdPolicy``.
        min_size, max_depth, method, tol, full_hierarchy, backend: passed to ``recursive_ncut``
            (``backend``: "auto", "torch" or "cuda", also for the power walk; None reads
            ``$DIFFCUT_GPU_BACKEND``).
        upsample: "nearest" or "majority" (need nothing) or "concept" (needs token features) for pixel labels.
        refine: PAMR refinement of pixel labels (needs the image).

    Shape:
        forward(x, grid=(h, w), output_size=None) -> (B, h, w) token labels, or (B, H, W) pixel labels
        when ``output_size=(H, W)`` is given. The full result, with the hierarchy, is kept in
        ``self.last_output`` (and returned by ``segment``).

    Example:
        >>> cut = RWNCut(threshold="dynamic", power=2)
        >>> labels = cut(attention, grid=(32, 32), output_size=(512, 512))
        >>> cut.last_output.segmentation.labels_at(0.3)
    """

    def __init__(
        self,
        *,
        source: Source = "auto",
        graph: GraphKind = "reversible",
        power: int = 1,
        alpha: float = 10.0,
        threshold: float | str | ThresholdPolicy = 0.5,
        min_size: int = 4,
        max_depth: int = 8,
        method: str = "auto",
        tol: float = 1e-5,
        full_hierarchy: bool | None = None,
        upsample: Literal["nearest", "concept", "majority"] = "nearest",
        refine: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        check_choice("source", source, ("auto", "attention", "features", "both"))
        if backend is not None:
            requested_backend(backend)
        check_choice("graph", graph, ("reversible", "symmetric", "rows"))
        check_choice("upsample", upsample, ("nearest", "concept", "majority"))
        check_int("power", power, 1)
        self.source = source
        self.graph = graph
        self.power = power
        self.alpha = alpha
        self.threshold = threshold
        self.min_size = min_size
        self.max_depth = max_depth
        self.method = method
        self.tol = tol
        self.full_hierarchy = full_hierarchy
        self.upsample = upsample
        self.refine = refine
        self.backend = backend
        self.last_output: RWNCutOutput | None = None

    def build_graph(self, x: Tensor, features: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(graph W (B, N, N), token features (B, N, C) or None) from attention and/or features."""
        check_tensor("x", x)
        kind = self._source_of(x)
        if kind == "features":
            return cosine_affinity(x, self.alpha), x
        P = x.float().mean(1) if x.ndim == 4 else x
        if x.dtype in (torch.float16, torch.bfloat16):
            # 16-bit rows sum to 1 only up to rounding, which biases the walk between disconnected
            # regions (the stationary distribution piles up on one): make them exact in float32.
            P = P.float()
            P = P / P.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        if self.power > 1:
            P = power_walk(P, self.power, backend=self.backend)
        if self.graph == "reversible":
            W = reversibilize(P)
        elif self.graph == "symmetric":
            W = symmetrize(P)
        else:
            W = attention_row_affinity(P, self.alpha)
        if kind == "both":
            if features is None:
                raise ValueError("features: expected (B, N, C) token features with source='both', got None")
            F = cosine_affinity(features, self.alpha).to(W.dtype)
            W = 0.5 * (_unit_mean_degree(W) + _unit_mean_degree(F))
        return W, features

    @torch.compiler.disable  # inside a compiled model: one graph break here, the solver runs eagerly
    @torch.no_grad()
    def segment(
        self,
        x: Tensor,
        grid: tuple[int, int],
        output_size: tuple[int, int] | None = None,
        *,
        features: Tensor | None = None,
        image: Tensor | None = None,
    ) -> RWNCutOutput:
        """Full result: token labels, optional pixel labels, hierarchy and graph.

        Args:
            x: attention (B, N, N) / (B, heads, N, N) or features (B, N, C).
            grid: token grid (h, w) with h * w = N.
            output_size: (H, W) of the pixel labels, or None for token labels only.
            features: (B, N, C) token features for concept upsampling when ``x`` is attention.
            image: (B, 3, H, W) in [0, 1] for PAMR refinement.

        Runs with autocast disabled (graphs, eigen-solves and cuts need float32 or better; fp16/bf16
        inputs are upcast), so the module works unchanged inside a model under ``torch.autocast``.
        """
        with torch.autocast(x.device.type, enabled=False):
            return self._segment(x, grid, output_size, features, image)

    def _segment(self, x: Tensor, grid: tuple[int, int], output_size: tuple[int, int] | None,
                 features: Tensor | None, image: Tensor | None) -> RWNCutOutput:
        W, own_features = self.build_graph(x, features)
        b, n, _ = W.shape
        h, w = check_grid(grid, n)
        seg = recursive_ncut(
            W,
            threshold=self.threshold,
            min_size=self.min_size,
            max_depth=self.max_depth,
            full_hierarchy=self.full_hierarchy,
            method=self.method,
            tol=self.tol,
            backend=self.backend,
        )
        tokens = seg.labels.view(b, h, w)
        pixels = None
        if output_size is not None:
            from ..upsample import upsample_labels

            feats = features if features is not None else own_features
            mode = self.upsample if (self.upsample != "concept" or feats is not None) else "nearest"
            pixels = upsample_labels(
                tokens, tuple(output_size), mode=mode, features=feats, image=image, refine=self.refine
            )
        out = RWNCutOutput(token_labels=tokens, labels=pixels, segmentation=seg, graph=W)
        self.last_output = out
        return out

    def forward(
        self,
        x: Tensor,
        grid: tuple[int, int],
        output_size: tuple[int, int] | None = None,
        *,
        features: Tensor | None = None,
        image: Tensor | None = None,
    ) -> Tensor:
        """Token labels (B, h, w), or pixel labels (B, H, W) when ``output_size`` is given."""
        out = self.segment(x, grid, output_size, features=features, image=image)
        return out.labels if out.labels is not None else out.token_labels

    def _source_of(self, x: Tensor) -> str:
        if self.source != "auto":
            if self.source in ("attention", "both") and x.ndim not in (3, 4):
                raise ValueError(f"x: expected attention (B, N, N) or (B, heads, N, N), got {tuple(x.shape)}")
            if self.source == "features" and x.ndim != 3:
                raise ValueError(f"x: expected features (B, N, C), got {tuple(x.shape)}")
            return self.source
        if x.ndim == 4:
            return "attention"
        if x.ndim != 3:
            raise ValueError(
                f"x: expected attention (B, N, N), (B, heads, N, N) or features (B, N, C), got {tuple(x.shape)}"
            )
        square = x.shape[-1] == x.shape[-2]
        if square and x.numel() and bool(((x.float().sum(-1) - 1).abs() < 1e-3).all()) and bool((x >= 0).all()):
            return "attention"
        return "features"

    def extra_repr(self) -> str:
        return (
            f"source={self.source}, graph={self.graph}, power={self.power}, threshold={self.threshold!r}, "
            f"min_size={self.min_size}, max_depth={self.max_depth}, upsample={self.upsample}"
        )


def _unit_mean_degree(W: Tensor) -> Tensor:
    """W scaled so that its mean degree is 1 (NCut is scale-invariant; this only balances a sum)."""
    mean_degree = W.sum(-1).mean(-1).clamp_min(torch.finfo(W.dtype).tiny)
    return W / mean_degree[:, None, None]
