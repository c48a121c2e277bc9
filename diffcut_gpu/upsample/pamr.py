"""PAMR: pixel-adaptive mask refinement (Araslanov & Roth, CVPR 2020), written from the paper's maths.

Every pixel ``i`` looks at the neighbours ``j`` of dilated 3x3 rings (the 8 off-centre taps of a 3x3
window at each dilation ``d``; out-of-image taps read the nearest border pixel). With ``sigma_c(i)`` the
standard deviation of channel ``c`` over pixel ``i`` and its neighbours, the affinity is

    k(i, j)     = - mean_c |I_c(i) - I_c(j)| / (lam * sigma_c(i) + eps)
    alpha(i, j) = softmax_j k(i, j)                                        # sums to 1 over j

and the soft masks ``m: (B, K, H, W)`` are averaged ``iters`` times with these fixed weights:

    m_{t+1}(i) = sum_j alpha(i, j) m_t(j)

Each step is a convex combination, so constant masks stay constant and the per-pixel sum over ``K`` is
kept. The input is replicate-padded once by the largest dilation; every tap is then a shifted view of
that copy (clamping an index is the same whatever the pad width), and a step is one multiply-add per
tap into the output: no ``(B, K, M, H, W)`` tap tensor is ever built, which makes a step ~10x cheaper
than gathering taps with ``F.unfold``. All of it is batched and runs on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from diffcut_gpu.upsample._common import check_labels, compact_labels

__all__ = ["DEFAULT_DILATIONS", "pamr", "pamr_affinity", "pamr_labels"]

DEFAULT_DILATIONS = (1, 2, 4, 8, 12, 24)
_EPS = 1e-8
_MAX_ELEMENTS = 1 << 26


def _check_params(dilations: Sequence[int], iters: int, lam: float) -> tuple[int, ...]:
    dilations = tuple(dilations)
    if not dilations or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dilations):
        raise ValueError(f"dilations: expected a non-empty sequence of positive ints, got {dilations!r}")
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 0:
        raise ValueError(f"iters: expected a non-negative int, got {iters!r}")
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not lam > 0:
        raise ValueError(f"lam: expected a positive float, got {lam!r}")
    return dilations


def _check_image(image: Tensor) -> None:
    if not isinstance(image, Tensor) or image.ndim != 4 or not image.is_floating_point():
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image: expected a float tensor (B, C, H, W), got {got}")
    if image.numel() == 0:
        raise ValueError(f"image: expected a non-empty tensor, got shape {tuple(image.shape)}")


def _check_aligned(name: str, t: Tensor, image: Tensor, layout: str) -> None:
    """``t`` (laid out as ``layout``, batch first, H and W last) has the batch, size and device of ``image``."""
    b, _, h, w = image.shape
    if t.shape[0] != b or t.shape[-2:] != (h, w):
        expected = layout.replace("B", str(b)).replace("H", str(h)).replace("W", str(w))
        raise ValueError(f"{name}: expected {layout} = {expected} to match image, got {tuple(t.shape)}")
    if t.device != image.device:
        raise ValueError(f"{name}: expected device {image.device} (that of image), got {t.device}")


def offsets(dilations: Sequence[int]) -> list[tuple[int, int]]:
    """(dy, dx) of the M = 8 * len(dilations) ring taps, in the order of the weights' M axis (row-major
    3x3 window without its centre, dilation by dilation)."""
    return [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _shifted(x: Tensor, dilations: Sequence[int]) -> list[Tensor]:
    """The ring taps of ``x (B, C, H, W)`` as M strided views ``(B, C, H, W)`` of one replicate-padded copy."""
    height, width = x.shape[-2:]
    r = max(dilations)
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    return [padded[..., r + dy : r + dy + height, r + dx : r + dx + width] for dy, dx in offsets(dilations)]


def neighbours(x: Tensor, dilations: Sequence[int]) -> Tensor:
    """Dilated 3x3 ring taps of every pixel: ``(B, C, H, W) -> (B, C, 8 * len(dilations), H, W)``."""
    return torch.stack(_shifted(x, dilations), dim=2)


def _propagate(m: Tensor, alpha: Tensor, dilations: Sequence[int]) -> Tensor:
    """One step ``sum_j alpha(i, j) m(j)``: ``m (B, K, H, W)``, ``alpha (B, M, H, W)`` -> ``(B, K, H, W)``."""
    taps = _shifted(m, dilations)
    out = taps[0] * alpha[:, :1]
    for t in range(1, len(taps)):
        out.addcmul_(taps[t], alpha[:, t : t + 1])
    return out


def pamr_affinity(image: Tensor, *, dilations: Sequence[int] = DEFAULT_DILATIONS, lam: float = 0.1) -> Tensor:
    """Pixel-adaptive weights ``alpha: (B, M, H, W)``, ``M = 8 * len(dilations)``, summing to 1 over ``M``.

    ``image: (B, C, H, W)``; its scale does not matter (the kernel divides by the local deviation).
    """
    _check_image(image)
    dilations = _check_params(dilations, 0, lam)
    img = image.to(torch.promote_types(image.dtype, torch.float32))
    taps = _shifted(img, dilations)  # M views (B, C, H, W)
    # Deviation over the pixel and its M taps, two-pass (mean, then squared deviations) as torch.std does.
    mean = img.clone()
    for tap in taps:
        mean += tap
    mean /= len(taps) + 1
    var = (img - mean).square_()
    for tap in taps:
        var.add_((tap - mean).square_())
    scale = 1.0 / (lam * (var / (len(taps) + 1)).sqrt_() + _EPS)  # (B, C, H, W)
    kernel = torch.stack([-((tap - img).abs_().mul_(scale)).mean(dim=1) for tap in taps], dim=1)
    return kernel.softmax(dim=1)


def pamr(
    image: Tensor,
    masks: Tensor,
    *,
    iters: int = 10,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
    lam: float = 0.1,
    max_elements: int = _MAX_ELEMENTS,
) -> Tensor:
    """Refine soft masks ``(B, K, H, W)`` with the colour affinities of ``image (B, C, H, W)``.

    Returns refined masks ``(B, K, H, W)`` (float32 or wider). Mask channels are refined in chunks of
    ``k`` so that the padded working copy ``(B, k, H + 2 r, W + 2 r)`` (r the largest dilation) stays
    under ``max_elements``.
    """
    _check_image(image)
    dilations = _check_params(dilations, iters, lam)
    if not isinstance(masks, Tensor) or masks.ndim != 4 or not masks.is_floating_point():
        got = f"{masks.dtype} {tuple(masks.shape)}" if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"masks: expected a float tensor (B, K, H, W), got {got}")
    _check_aligned("masks", masks, image, "(B, K, H, W)")
    if not isinstance(max_elements, int) or max_elements <= 0:
        raise ValueError(f"max_elements: expected a positive int, got {max_elements!r}")

    alpha = pamr_affinity(image, dilations=dilations, lam=lam)  # (B, M, H, W)
    out = masks.to(torch.promote_types(masks.dtype, alpha.dtype))
    if iters == 0:
        return out.clone() if out is masks else out
    batch, _, height, width = out.shape
    r = max(dilations)
    chunk = max(1, max_elements // (batch * (height + 2 * r) * (width + 2 * r)))
    refined = []
    for start in range(0, out.shape[1], chunk):
        m = out[:, start : start + chunk]
        for _ in range(iters):
            m = _propagate(m, alpha, dilations)
        refined.append(m)
    return torch.cat(refined, dim=1)


def pamr_labels(
    image: Tensor,
    labels: Tensor,
    *,
    iters: int = 10,
    dilations: Sequence[int] = DEFAULT_DILATIONS,
    lam: float = 0.1,
) -> Tensor:
    """Refine a hard label map ``(B, H, W)`` (one-hot soft masks through `pamr`, then argmax).

    Returns ``(B, H, W)`` int64 whose values are among the input label values of the same image.
    """
    labels = check_labels(labels)
    _check_image(image)
    _check_aligned("labels", labels, image, "(B, H, W)")
    ids, values = compact_labels(labels)
    masks = (
        F.one_hot(ids, values.numel()).permute(0, 3, 1, 2).to(torch.promote_types(image.dtype, torch.float32))
    )
    refined = pamr(image, masks, iters=iters, dilations=dilations, lam=lam)
    return values[refined.argmax(dim=1)]
