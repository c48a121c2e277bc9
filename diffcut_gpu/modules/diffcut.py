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

from .._checks import check_choice, check_tensor
from ..spectral import Segmentation, ThresholdPolicy
from .rwncut import RWNCut

BackboneKind = Literal["diffusion", "vit"]

#: DiffCut's backbone: SSD-1B, a distilled SDXL.
DEFAULT_DIFFUSION_MODEL = "segmind/SSD-1B"


@dataclass
class DiffCutOutput:
    """Pixel labels, token labels and the hierarchy of one batch."""

    labels: Tensor  # (B, H, W) int64
    token_labels: Tensor  # (B, h, w) int64
    segmentation: Segmentation


class DiffCut(nn.Module):
    """Zero-shot segmentation module: ``forward(images) -> DiffCutOutput``.

    Args:
        backbone: a module mapping images (B, 3, H, W) in [0, 1] to an object with ``attention``
            (B, N, N) row-stochastic, ``features`` (B, N, C) and ``grid`` (h, w) — ``DiffusionBackbone``
            or ``ViTBackbone``, or your own.
        source: graph to cut: "attention" (random-walk NCut on the transition matrix), "features"
            (DiffCut's cosine affinity) or "both".
        power, graph, alpha, threshold, min_size, max_depth, upsample, refine, backend: see ``RWNCut``.

    Example:
        >>> model = DiffCut.from_pretrained("segmind/SSD-1B", device="cuda", threshold="dynamic")
        >>> out = model(images)            # images: (B, 3, H, W) in [0, 1] on cuda
        >>> out.labels.shape               # (B, H, W)
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        source: Literal["attention", "features", "both"] = "attention",
        graph: Literal["reversible", "symmetric", "rows"] = "reversible",
        power: int = 1,
        alpha: float = 10.0,
        threshold: float | str | ThresholdPolicy = "dynamic",
        min_size: int = 4,
        max_depth: int = 8,
        upsample: Literal["nearest", "concept", "majority"] = "concept",
        refine: bool = False,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        check_choice("source", source, ("attention", "features", "both"))
        self.backbone = backbone
        self.source = source
        self.cut = RWNCut(
            source=source,
            graph=graph,
            power=power,
            alpha=alpha,
            threshold=threshold,
            min_size=min_size,
            max_depth=max_depth,
            upsample=upsample,
            refine=refine,
            backend=backend,
        )

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
        out = self.backbone(images)
        x = out.features if self.source == "features" else out.attention
        result = self.cut.segment(
            x, tuple(out.grid), tuple(images.shape[-2:]), features=out.features, image=images
        )
        return DiffCutOutput(labels=result.labels, token_labels=result.token_labels, segmentation=result.segmentation)
