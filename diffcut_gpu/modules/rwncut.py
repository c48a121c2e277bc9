"""``RWNCut``: the drop-in module from attention or token features to segment labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .._checks import check_grid, check_tensor
from .._threads import single_threaded
from ..attention.hf import attention_to_transition
from ..models.output import short_repr
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
from ..spectral.thresholds import make_policy
from .config import CutConfig, portable_config

Source = Literal["attention", "features", "both"]
GraphKind = Literal["reversible", "symmetric", "rows"]
UpsampleMode = Literal["concept", "nearest", "majority"]

_D = CutConfig()  # the defaults, written once (modules/config.py)


@dataclass(repr=False)
class RWNCutOutput:
    """Everything one call produced: token labels, pixel labels (if asked) and the hierarchy.

    ``labels_at(tau)`` and ``labels_for_count(K)`` re-cut the kept hierarchy and return labels at the
    same resolution as ``labels`` (pixels when an output size was given, else tokens), without running
    the backbone or the recursion again.
    """

    token_labels: Tensor  # (B, h, w) int64
    labels: Tensor | None  # (B, H, W) int64 when an output size was given
    segmentation: Segmentation
    graph: Tensor  # (B, N, N) the graph that was cut
    output_size: tuple[int, int] | None = None
    upsample: str = "nearest"
    features: Tensor | None = None  # (B, N, C) token features used by concept upsampling
    image: Tensor | None = None  # (B, 3, H, W) for PAMR refinement
    refine: bool = False

    def labels_at(self, tau: float | Tensor) -> Tensor:
        """Labels at threshold ``tau`` (scalar or (B,)): (B, H, W) pixels, or (B, h, w) tokens."""
        return self._to_output(self.segmentation.labels_at(tau))

    def labels_for_count(self, segments: int | Tensor) -> Tensor:
        """Labels with ``segments`` segments per image (needs the full hierarchy: ``segments=`` or
        ``full_hierarchy=True`` at the call): (B, H, W) pixels, or (B, h, w) tokens."""
        return self._to_output(self.segmentation.labels_for_count(segments))

    def _to_output(self, flat: Tensor) -> Tensor:
        tokens = flat.view(self.token_labels.shape)
        if self.output_size is None:
            return tokens
        from ..upsample import upsample_labels

        return upsample_labels(tokens, self.output_size, mode=self.upsample, features=self.features,
                               image=self.image, refine=self.refine)

    __repr__ = short_repr


class RWNCut(nn.Module):
    """Recursive random-walk Normalized Cuts as a ``torch.nn.Module``.

    Args:
        source: what ``forward`` receives, stated, never guessed from the values: "attention" (default)
            (B, N, N) or (B, heads, N, N) attention probabilities, "features" (B, N, C) token features, or
            "both" (attention in ``x`` plus ``features=``: the mean of the attention graph and the feature
            graph, each scaled to mean degree 1). Attention rows must sum to 1 within what their dtype
            holds (bf16 / fp16 softmax output is fine); they are upcast to float32 and renormalised.
            Attention with special tokens dropped: see ``hf_attention_to_transition``.
        graph: for attention, "reversible" (Pi P + P^T Pi)/2 whose NCut is the walk's escape probability,
            "symmetric" (P + P^T)/2, or "rows" (cosine of attention rows, min-max^alpha).
        power: k of the power walk P^k (attention only: must be 1 with source="features"); larger k gives
            coarser segments.
        alpha: exponent of the min-max cosine affinity (features and "rows").
        threshold: constant tau, "dynamic" (default), a policy name or a ``ThresholdPolicy``.
        segments: when given, cut the hierarchy into exactly this many segments per image instead
            (``Segmentation.labels_for_count``; fewer only where the hierarchy has fewer leaves). The
            recursion then explores the full hierarchy and ``threshold`` is not used.
        min_size, max_depth, method, tol, full_hierarchy, backend: passed to ``recursive_ncut``
            (``backend``: "auto", "torch" or "cuda", also for the power walk; None reads
            ``$DIFFCUT_GPU_BACKEND``).
        upsample: token labels to pixels when ``output_size`` is given: "concept" (default; needs token
            features: ``features=`` or source="features"/"both", else a ``ValueError``), "nearest" or
            "majority" (need nothing).
        refine: PAMR refinement of pixel labels (needs the image).

    Every setting is checked here (``CutConfig``), not at the first call. ``get_config()`` returns them,
    ``RWNCut.from_config(config)`` rebuilds the module, and the ``state_dict`` carries them: loading it
    into a module built with other settings raises instead of keeping the wrong ones.

    Shape:
        forward(x, grid=(h, w), output_size=None) -> (B, h, w) token labels, or (B, H, W) pixel labels
        when ``output_size=(H, W)`` is given. The full result, with the hierarchy, is kept in
        ``self.last_output`` (and returned by ``segment``).

    Example:
        >>> cut = RWNCut(power=2)                       # threshold="dynamic", upsample="concept"
        >>> labels = cut(attention, grid=(32, 32), output_size=(512, 512), features=features)
        >>> cut.last_output.segmentation.labels_at(0.3)
    """

    def __init__(
        self,
        *,
        source: Source = _D.source,
        graph: GraphKind = _D.graph,
        power: int = _D.power,
        alpha: float = _D.alpha,
        threshold: float | str | ThresholdPolicy = _D.threshold,
        segments: int | None = _D.segments,
        min_size: int = _D.min_size,
        max_depth: int = _D.max_depth,
        method: str = _D.method,
        tol: float = _D.tol,
        full_hierarchy: bool | None = _D.full_hierarchy,
        upsample: UpsampleMode = _D.upsample,
        refine: bool = _D.refine,
        backend: str | None = _D.backend,
    ) -> None:
        super().__init__()
        config = CutConfig(
            source=source, graph=graph, power=power, alpha=alpha, threshold=threshold, segments=segments,
            min_size=min_size, max_depth=max_depth, method=method, tol=tol, full_hierarchy=full_hierarchy,
            upsample=upsample, refine=refine, backend=backend,
        )
        for name, value in config.as_dict().items():
            setattr(self, name, value)
        self.last_output: RWNCutOutput | None = None

    # -- configuration ----------------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments of this module (checked again, in case attributes were changed)."""
        return CutConfig(**{name: getattr(self, name) for name in CutConfig.__dataclass_fields__}).as_dict()

    @classmethod
    def from_config(cls, config: dict) -> RWNCut:
        """A module built from ``get_config()`` output; unknown keys raise."""
        unknown = sorted(set(config) - set(CutConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"config: expected keys among {sorted(CutConfig.__dataclass_fields__)}, got {unknown}")
        return cls(**config)

    def get_extra_state(self) -> dict:
        """Kept in ``state_dict()`` as ``_extra_state``: the settings, as plain values."""
        return {"config": portable_config(self.get_config())}

    def set_extra_state(self, state: dict) -> None:
        """Refuse a ``state_dict`` saved with other settings (they would be silently kept otherwise)."""
        saved = dict(state.get("config", {})) if isinstance(state, dict) else {}
        mine = portable_config(self.get_config())
        diff = [f"{k}={saved.get(k)!r} (this module: {mine.get(k)!r})" for k in sorted(set(saved) | set(mine))
                if saved.get(k) != mine.get(k)]
        if diff:
            raise ValueError(
                f"state_dict: expected the settings of this {type(self).__name__}, got a checkpoint saved with "
                f"{', '.join(diff)}; build the module with RWNCut.from_config(state_dict['_extra_state']"
                "['config']) (the key is prefixed inside a larger model), or change its settings first"
            )

    # -- graph and cut ----------------------------------------------------------------------------
    def build_graph(self, x: Tensor, features: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(graph W (B, N, N), token features (B, N, C) or None) from attention and/or features."""
        check_tensor("x", x)
        if self.source == "features":
            if x.ndim != 3:
                raise ValueError(f"x: expected features (B, N, C) with source='features', got {tuple(x.shape)}")
            return cosine_affinity(x, self.alpha), x
        P = attention_to_transition(x)
        if self.power > 1:
            P = power_walk(P, self.power, backend=self.backend)
        if self.graph == "reversible":
            W = reversibilize(P)
        elif self.graph == "symmetric":
            W = symmetrize(P)
        else:
            W = attention_row_affinity(P, self.alpha)
        if self.source == "both":
            if features is None:
                raise ValueError("features: expected (B, N, C) token features with source='both', got None")
            F = cosine_affinity(features, self.alpha).to(W.dtype)
            W = 0.5 * (_unit_mean_degree(W) + _unit_mean_degree(F))
        return W, features

    @torch.compiler.disable  # inside a compiled model: one graph break here, the solver runs eagerly
    @torch.no_grad()
    @single_threaded()  # thousands of small ops: a thread pool only adds wake-ups (diffcut_gpu/_threads.py)
    def segment(
        self,
        x: Tensor,
        grid: tuple[int, int],
        output_size: tuple[int, int] | None = None,
        *,
        features: Tensor | None = None,
        image: Tensor | None = None,
        threshold: float | str | ThresholdPolicy | None = None,
    ) -> RWNCutOutput:
        """Full result: token labels, optional pixel labels, hierarchy and graph.

        Args:
            x: attention (B, N, N) / (B, heads, N, N) or features (B, N, C).
            grid: token grid (h, w) with h * w = N.
            output_size: (H, W) of the pixel labels, or None for token labels only.
            features: (B, N, C) token features for concept upsampling when ``x`` is attention.
            image: (B, 3, H, W) in [0, 1] for PAMR refinement.
            threshold: overrides ``self.threshold`` for this call (``DiffCut`` passes its calibrated policy).

        Runs with autocast disabled (graphs, eigen-solves and cuts need float32 or better; fp16/bf16
        inputs are upcast), so the module works unchanged inside a model under ``torch.autocast``.
        """
        if output_size is not None and self.upsample == "concept" and features is None and self.source != "features":
            raise ValueError(  # before the cut, not after it
                "features: expected (B, N, C) token features for upsample='concept' (the default), got None; "
                "pass features=..., or build the module with upsample='nearest' or 'majority'"
            )
        with torch.autocast(x.device.type, enabled=False):
            return self._segment(x, grid, output_size, features, image, threshold)

    def _segment(self, x: Tensor, grid: tuple[int, int], output_size: tuple[int, int] | None,
                 features: Tensor | None, image: Tensor | None,
                 threshold: float | str | ThresholdPolicy | None) -> RWNCutOutput:
        W, own_features = self.build_graph(x, features)
        b, n, _ = W.shape
        h, w = check_grid(grid, n)
        policy = make_policy(self.threshold if threshold is None else threshold, graph=W)
        seg = recursive_ncut(
            W,
            threshold=policy,
            min_size=self.min_size,
            max_depth=self.max_depth,
            full_hierarchy=True if self.segments is not None else self.full_hierarchy,
            method=self.method,
            tol=self.tol,
            backend=self.backend,
        )
        if self.segments is not None:
            seg.labels = seg.labels_for_count(self.segments)
        tokens = seg.labels.view(b, h, w)
        pixels = None
        if output_size is not None:
            from ..upsample import upsample_labels

            feats = features if features is not None else own_features
            pixels = upsample_labels(
                tokens, tuple(output_size), mode=self.upsample, features=feats, image=image, refine=self.refine
            )
        out = RWNCutOutput(
            token_labels=tokens,
            labels=pixels,
            segmentation=seg,
            graph=W,
            output_size=None if output_size is None else (int(output_size[0]), int(output_size[1])),
            upsample=self.upsample,
            features=features if features is not None else own_features,
            image=image,
            refine=self.refine,
        )
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

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())


def _unit_mean_degree(W: Tensor) -> Tensor:
    """W scaled so that its mean degree is 1 (NCut is scale-invariant; this only balances a sum)."""
    mean_degree = W.sum(-1).mean(-1).clamp_min(torch.finfo(W.dtype).tiny)
    return W / mean_degree[:, None, None]
