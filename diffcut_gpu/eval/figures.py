"""Figure of example segmentations next to the ground truth: one row per image, one column per method.

Every label map is drawn the same way, so that columns compare at a glance: each segment is filled with
the mean colour of its pixels in the image, its boundaries are drawn in white, and its number of segments
is written in the top-left corner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["mean_colour_mosaic", "plot_examples"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("figures need matplotlib: pip install diffcut-gpu[plot]") from err
    return plt


def mean_colour_mosaic(image: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: each segment of ``labels (H, W)`` filled with the mean colour of ``image``.

    ``image`` is uint8 ``(3, H, W)`` (the datasets' layout) or ``(H, W, 3)``; boundaries (pixels whose
    right or lower neighbour has another label) are white.
    """
    img = image.cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    lab = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.shape[:2] != lab.shape:
        raise ValueError(f"labels: expected the image size {img.shape[:2]}, got {lab.shape}")
    _, ids = np.unique(lab, return_inverse=True)
    ids = ids.reshape(lab.shape)
    counts = np.bincount(ids.ravel()).astype(np.float64)
    colours = np.stack([np.bincount(ids.ravel(), weights=img[..., c].ravel()) for c in range(3)], 1)
    out = (colours / counts[:, None])[ids].round().astype(np.uint8)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    out[edge] = 255
    return out


def plot_examples(
    examples: Mapping[str, dict],
    methods: Sequence[str],
    path: str | Path,
    *,
    titles: Mapping[str, str] | None = None,
    max_images: int = 4,
    dpi: int = 110,
) -> Path:
    """Write a PNG grid: image, ground truth (first annotator), then one column per method.

    Args:
        examples: ``EvalResult.examples``: image name -> ``dict(image, gt, pred={method: (H, W)})``.
        methods: method names (columns), in order; a method missing for an image leaves a blank cell.
        path: output PNG (folders are created).
        titles: optional short column titles per method name.
        max_images: rows drawn (the first images in ``examples`` order).
        dpi: resolution of the PNG.

    Returns:
        the path written.
    """
    if not examples:
        raise ValueError("examples: expected at least one image, got none; pass examples=[names] to evaluate")
    plt = _pyplot()
    names = list(examples)[:max_images]
    cols = 2 + len(methods)
    fig, axes = plt.subplots(len(names), cols, figsize=(2.3 * cols, 1.9 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        ex = examples[name]
        image = ex["image"].permute(1, 2, 0).numpy() if isinstance(ex["image"], Tensor) else ex["image"]
        gt = mean_colour_mosaic(ex["image"], ex["gt"])
        cells = [("image", image, None), ("ground truth (annotator 1)", gt, ex["gt"])]
        for m in methods:
            pred = ex["pred"].get(m)
            pix = None if pred is None else mean_colour_mosaic(ex["image"], pred)
            cells.append(((titles or {}).get(m, m), pix, pred))
        for c, (title, pix, labels) in enumerate(cells):
            ax = axes[r, c]
            ax.axis("off")
            if r == 0:
                ax.set_title(title, fontsize=7)
            if pix is None:
                continue
            ax.imshow(pix)
            if labels is not None:  # number of segments in the corner
                count = int(torch.as_tensor(labels).unique().numel())
                ax.text(0.02, 0.98, str(count), transform=ax.transAxes, va="top", ha="left", fontsize=6,
                        color="white", bbox={"facecolor": "black", "alpha": 0.6, "pad": 1, "linewidth": 0})
        axes[r, 0].text(-0.04, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
