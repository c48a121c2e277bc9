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
from ..spectral import Segmentation, ThresholdPolicy
from .config import CutConfig
from .rwncut import GraphKind, RWNCut, Source, UpsampleMode

BackboneKind = Literal["diffusion", "vit"]

_D = CutConfig()  # the same defaults as RWNCut, written once (modules/config.py)

#: DiffCut's backbone: SSD-1B, a distilled SDXL.
DEFAULT_DIFFUSION_MODEL = "segmind/SSD-1B"


@dataclass(repr=False)
class DiffCutOutput:
    """Pixel labels, token labels and the hierarchy of one batch (``repr`` shows shapes only)."""

    labels: Tensor  # (B, H, W) int64
    token_labels: Tensor  # (B, h, w) int64
    segmentation: Segmentation

    __repr__ = short_repr


class DiffCut(nn.Module):
    """Zero-shot segmentation module: ``forward(images) -> DiffCutOutput``.

    Args:
        backbone: a module mapping images (B, 3, H, W) in [0, 1] to an object with ``attention``
            (B, N, N) row-stochastic, ``features`` (B, N, C) and ``grid`` (h, w) — ``DiffusionBackbone``
            or ``ViTBackbone``, or your own.
        source: graph to cut: "attention" (random-walk NCut on the transition matrix), "features"
            (DiffCut's cosine affinity) or "both".
        power, graph, alpha, threshold, min_size, max_depth, method, tol, full_hierarchy, upsample,
            refine: see ``RWNCut``; the defaults are the same (``CutConfig``), all checked here.

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
        min_size: int = _D.min_size,
        max_depth: int = _D.max_depth,
        method: str = _D.method,
        tol: float = _D.tol,
        full_hierarchy: bool | None = _D.full_hierarchy,
        upsample: UpsampleMode = _D.upsample,
        refine: bool = _D.refine,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.cut = RWNCut(
            source=source, graph=graph, power=power, alpha=alpha, threshold=threshold, min_size=min_size,
            max_depth=max_depth, method=method, tol=tol, full_hierarchy=full_hierarchy, upsample=upsample,
            refine=refine,
        )

    @property
    def source(self) -> str:
        return self.cut.source

    def get_config(self) -> dict:
        """The cut's settings (the constructor arguments besides ``backbone``)."""
        return self.cut.get_config()

    @classmethod
    def from_config(cls, backbone: nn.Module, config: dict) -> DiffCut:
        """``DiffCut(backbone, **config)`` for a ``get_config()`` output; unknown keys raise."""
        return cls(backbone, **RWNCut.from_config(config).get_config())

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
        ``segmind/SSD-1B``); ``backbone="vit"`` a Hugging Face ViT (e.g. a local DINOv2 folder).
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
            from ..models.vit import ViTBackbone

            if name_or_path is None:
                raise ValueError("name_or_path: expected a ViT hub name or local folder with backbone='vit', got None")
            model = ViTBackbone.from_pretrained(name_or_path, device=device, dtype=dtype, **backbone_kwargs)
        return cls(model, **kwargs)

    @torch.no_grad()
    def forward(self, images: Tensor) -> DiffCutOutput:
        """Segment a batch: images (B, 3, H, W) in [0, 1] -> pixel labels (B, H, W) and the hierarchy."""
        check_tensor("images", images)
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images: expected a float tensor with values in [0, 1], got {images.dtype}")
        check_finite("images", images)  # before the backbone runs, not as a NaN graph after it
        out = self.backbone(images)
        x = out.features if self.source == "features" else out.attention
        result = self.cut.segment(
            x, tuple(out.grid), tuple(images.shape[-2:]), features=out.features, image=images
        )
        return DiffCutOutput(labels=result.labels, token_labels=result.token_labels, segmentation=result.segmentation)
