"""`upsample_labels`: the one front door from token labels ``(B, h, w)`` to pixel labels ``(B, H, W)``."""

from __future__ import annotations

from torch import Tensor

from diffcut_gpu.upsample._common import check_labels, check_size
from diffcut_gpu.upsample.concept import concept_assignment
from diffcut_gpu.upsample.nearest import majority_upsample, nearest_upsample
from diffcut_gpu.upsample.pamr import pamr_labels

__all__ = ["MODES", "upsample_labels"]

MODES = ("concept", "nearest", "majority")


def upsample_labels(
    labels: Tensor,
    output_size: tuple[int, int] | int,
    *,
    mode: str = "concept",
    features: Tensor | None = None,
    image: Tensor | None = None,
    refine: bool = False,
    pamr_iters: int = 10,
) -> Tensor:
    """Token labels ``(B, h, w)`` -> pixel labels ``(B, H, W)`` int64.

    Args:
        labels: ``(B, h, w)`` integer token labels.
        output_size: ``(H, W)`` pixels (an int means a square).
        mode: ``"concept"`` (cosine to per-segment mean features; needs ``features (B, h * w, C)``),
            ``"nearest"`` (nearest token) or ``"majority"`` (bilinear one-hot vote).
        features: token features for ``mode="concept"``.
        image: ``(B, C, H, W)`` float image at ``output_size``; needed when ``refine``.
        refine: run `pamr_labels` on the upsampled labels with ``image``.
        pamr_iters: PAMR iterations.

    Pixel labels of image ``b`` are always among the token labels of image ``b``.
    """
    labels = check_labels(labels)
    size = check_size(output_size)
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    if mode == "concept" and features is None:
        raise ValueError("features: expected (B, h * w, C) token features for mode='concept', got None")
    if refine:
        if image is None:
            raise ValueError(
                f"image: expected a (B, C, {size[0]}, {size[1]}) image for refine=True, got None"
            )
        if not isinstance(image, Tensor) or image.ndim != 4 or tuple(image.shape[2:]) != size:
            got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image: expected (B, C, {size[0]}, {size[1]}) to match output_size, got {got}")
        if image.shape[0] != labels.shape[0]:
            raise ValueError(
                f"image: expected batch {labels.shape[0]} (that of labels), got {image.shape[0]}"
            )
        if not isinstance(pamr_iters, int) or isinstance(pamr_iters, bool) or pamr_iters < 0:
            raise ValueError(f"pamr_iters: expected a non-negative int, got {pamr_iters!r}")

    if mode == "concept":
        out = concept_assignment(labels, features, size)
    elif mode == "nearest":
        out = nearest_upsample(labels, size)
    else:
        out = majority_upsample(labels, size)
    if refine:
        out = pamr_labels(image, out, iters=pamr_iters)
    return out
