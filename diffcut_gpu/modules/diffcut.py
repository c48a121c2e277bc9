"""``DiffCut``: images to pixel labels, a backbone's attention cut by recursive random-walk NCut.

The backbone (a Stable Diffusion UNet, or a Hugging Face ViT) returns a row-stochastic attention
matrix, token features and the token grid, all on the device; ``RWNCut`` cuts the graph and upsamples
the labels. Nothing leaves the device between the backbone and the solver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_finite, check_tensor
from ..models.output import short_repr
from ..spectral import NullBoundThreshold, Segmentation, ThresholdPolicy, make_policy, recursive_ncut
from ..spectral.null_model import null_bound_of, structureless_images
from .config import CutConfig
from .rwncut import GraphKind, RWNCut, RWNCutOutput, Source, UpsampleMode

BackboneKind = Literal["diffusion", "vit"]

_D = CutConfig()  # the same defaults as RWNCut, written once (modules/config.py)

#: DiffCut's backbone: SSD-1B, a distilled SDXL.
DEFAULT_DIFFUSION_MODEL = "segmind/SSD-1B"


@dataclass(repr=False)
class DiffCutOutput:
    """Pixel labels, token labels and the hierarchy of one batch (``repr`` shows shapes only).

    ``labels_at(tau)`` / ``labels_for_count(K)`` re-cut the hierarchy and return pixel labels at the
    input size, without running the backbone again.
    """

    labels: Tensor  # (B, H, W) int64
    token_labels: Tensor  # (B, h, w) int64
    segmentation: Segmentation
    cut: RWNCutOutput | None = None

    def labels_at(self, tau: float | Tensor) -> Tensor:
        """(B, H, W) pixel labels at threshold ``tau`` (scalar or (B,))."""
        return self._cut().labels_at(tau)

    def labels_for_count(self, segments: int | Tensor) -> Tensor:
        """(B, H, W) pixel labels with ``segments`` segments per image (see ``Segmentation.labels_for_count``)."""
        return self._cut().labels_for_count(segments)

    def _cut(self) -> RWNCutOutput:
        if self.cut is None:
            raise ValueError("cut: this output keeps no RWNCut result to re-cut; use DiffCut.forward's output")
        return self.cut

    __repr__ = short_repr


class DiffCut(nn.Module):
    """Zero-shot segmentation module: ``forward(images) -> DiffCutOutput``.

    Args:
        backbone: a module mapping images (B, 3, H, W) in [0, 1] to an object with ``attention``
            (B, N, N) row-stochastic, ``features`` (B, N, C) and ``grid`` (h, w) — ``DiffusionBackbone``
            or ``ViTBackbone``, or your own.
        source: graph to cut: "attention" (random-walk NCut on the transition matrix), "features"
            (DiffCut's cosine affinity) or "both".
        power, graph, alpha, threshold, segments, min_size, max_depth, method, tol, full_hierarchy,
            upsample, refine, backend: see ``RWNCut``; the defaults are the same (``CutConfig``), all
            checked here.
        null_model: with ``threshold="dynamic"``, calibrate the null bound on structureless images (a
            constant grey image and uniform noise) through this backbone, once per input size (cached):
            only splits below every NCut those images produce are kept (``spectral/null_model.py``).

    ``get_config()`` / ``DiffCut.from_config(backbone, config)`` and the ``state_dict`` carry the cut's
    settings as ``RWNCut`` does (the backbone's weights are in the ``state_dict`` as usual).

    Example:
        >>> model = DiffCut.from_pretrained("segmind/SSD-1B", device="cuda", threshold="dynamic")
        >>> out = model(images)            # images: (B, 3, H, W) in [0, 1] on cuda
        >>> out.labels.shape               # (B, H, W)
    """

    def __init__(
        self,
        backbone: nn.Module,
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
        null_model: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.null_model = bool(null_model)
        self._null_bounds: dict[tuple, float] = {}
        self.cut = RWNCut(
            source=source, graph=graph, power=power, alpha=alpha, threshold=threshold, segments=segments,
            min_size=min_size, max_depth=max_depth, method=method, tol=tol, full_hierarchy=full_hierarchy,
            upsample=upsample, refine=refine, backend=backend,
        )

    @property
    def source(self) -> str:
        return self.cut.source

    def get_config(self) -> dict:
        """The constructor arguments besides ``backbone``: the cut's settings and ``null_model``."""
        return {**self.cut.get_config(), "null_model": self.null_model}

    @classmethod
    def from_config(cls, backbone: nn.Module, config: dict) -> DiffCut:
        """``DiffCut(backbone, **config)`` for a ``get_config()`` output; unknown keys raise."""
        config = dict(config)
        null_model = config.pop("null_model", True)
        return cls(backbone, **RWNCut.from_config(config).get_config(), null_model=null_model)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        backbone: BackboneKind = "diffusion",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        backbone_kwargs: dict | None = None,
        **kwargs,
    ) -> DiffCut:
        """Build the backbone from a hub name or a local folder, then the module around it.

        ``backbone="diffusion"`` loads a Stable Diffusion family checkpoint with diffusers (default
        ``segmind/SSD-1B``); ``backbone="vit"`` a Hugging Face ViT (e.g. a local DINOv2 folder), which
        resizes every image to about ``DEFAULT_TOKEN_BUDGET`` (1,024) tokens, aspect kept, unless
        ``backbone_kwargs`` sets ``resolution`` or ``token_budget``.
        ``backbone_kwargs`` go to the backbone's ``from_pretrained``; ``kwargs`` to ``DiffCut``.
        """
        check_choice("backbone", backbone, ("diffusion", "vit"))
        backbone_kwargs = dict(backbone_kwargs or {})
        if backbone == "diffusion":
            from ..models.diffusion import DiffusionBackbone

            model = DiffusionBackbone.from_pretrained(
                name_or_path or DEFAULT_DIFFUSION_MODEL, device=device, torch_dtype=dtype, **backbone_kwargs
            )
        else:
            from ..models.vit import DEFAULT_TOKEN_BUDGET, ViTBackbone

            if "resolution" not in backbone_kwargs:
                backbone_kwargs.setdefault("token_budget", DEFAULT_TOKEN_BUDGET)
            if name_or_path is None:
                raise ValueError("name_or_path: expected a ViT hub name or local folder with backbone='vit', got None")
            model = ViTBackbone.from_pretrained(name_or_path, device=device, dtype=dtype, **backbone_kwargs)
        return cls(model, **kwargs)

    @torch.no_grad()
    def forward(self, images: Tensor, output_size: tuple[int, int] | None = None) -> DiffCutOutput:
        """Segment a batch: images (B, 3, H, W) in [0, 1] -> pixel labels and the hierarchy.

        Labels are (B, H, W), or (B, *output_size) when given (e.g. the size of the original photo when
        ``images`` were resized for processing): token labels go to that size in one step.
        """
        check_tensor("images", images)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images: expected a float tensor with values in [0, 1], got {images.dtype}")
        check_finite("images", images)  # before the backbone runs, not as a NaN graph after it
        size = tuple(images.shape[-2:]) if output_size is None else (int(output_size[0]), int(output_size[1]))
        if min(size) < 1:
            raise ValueError(f"output_size: expected (H, W) positive ints, got {output_size!r}")
        out = self.backbone(images)
        x = out.features if self.source == "features" else out.attention
        result = self.cut.segment(
            x, tuple(out.grid), size, features=out.features, image=images if size == tuple(images.shape[-2:]) else None,
            threshold=self.policy_for(images),
        )
        return DiffCutOutput(labels=result.labels, token_labels=result.token_labels,
                             segmentation=result.segmentation, cut=result)

    def policy_for(self, images: Tensor) -> float | str | ThresholdPolicy:
        """The threshold used for ``images``: the calibrated ``NullBoundThreshold`` for "dynamic" (when
        ``null_model``), else ``self.cut.threshold`` unchanged."""
        threshold = self.cut.threshold
        if not self.null_model or not isinstance(threshold, str) or threshold != "dynamic":
            return threshold
        policy = make_policy(threshold)
        if not isinstance(policy, NullBoundThreshold):
            return threshold
        return policy.with_bound(self.null_bound(tuple(images.shape[-2:]), images.device, images.dtype))

    @torch.no_grad()
    def null_bound(self, size: tuple[int, int], device: torch.device, dtype: torch.dtype) -> float:
        """Smallest candidate NCut of structureless images of ``size`` through this backbone (cached)."""
        cut = self.cut
        key = (tuple(size), str(device), self.source, cut.graph, cut.power, cut.alpha, cut.min_size, cut.max_depth)
        if key not in self._null_bounds:
            blank = structureless_images(*size, device=device, dtype=dtype)
            out = self.backbone(blank)
            x = out.features if self.source == "features" else out.attention
            W, _ = cut.build_graph(x, out.features)
            seg = recursive_ncut(W, threshold="logotsu", min_size=cut.min_size, max_depth=cut.max_depth,
                                 method=cut.method, tol=cut.tol, backend=cut.backend)
            self._null_bounds[key] = null_bound_of(seg)
        return self._null_bounds[key]
