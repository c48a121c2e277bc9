"""BSDS region scores: segmentation covering, probabilistic Rand index (PRI), variation of information (VI).

All three are read off the contingency table ``n[i, j]`` = pixels with ground-truth region ``i`` and
predicted segment ``j`` (``N`` pixels, row sums ``a_i``, column sums ``b_j``), never from pixel pairs:

* **Covering of the ground truth by the prediction** (Arbelaez et al., TPAMI 2011, Sec. 3.2)::

      C(S -> G) = 1/N  sum_{R in G} |R| * max_{R' in S} |R & R'| / |R | R'|

  i.e. every ground-truth region is scored by its best-overlapping predicted segment, weighted by size.
* **Rand index**: fraction of the ``N(N-1)/2`` pixel pairs on which both labelings agree (same/same or
  different/different); with sums of squares it is
  ``1 - (sum a_i^2 + sum b_j^2 - 2 sum n_ij^2) / (N (N - 1))``.
  **PRI** (Unnikrishnan et al.) is its mean over the annotators of the image.
* **VI** (Meila) ``= H(G) + H(S) - 2 I(G; S)`` with the **natural log** (nats), as the BSDS benchmark
  code uses; mean over the annotators.

Against several annotators, each score is computed per annotator and averaged (for the covering this
equals pooling the regions of all annotators, as the benchmark does, since they share ``N``). Higher is
better for covering and PRI (1 for a perfect match); lower is better for VI (0 for a perfect match).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from diffcut_gpu.eval.labels import LabelArray, as_label_tensor, compact_ids, contingency_blocks

__all__ = ["BSDSMetrics", "annotator_mean", "bsds_scores", "contingency_table", "scores_from_contingency"]


def _label_device(pred: LabelArray, gts: Sequence[LabelArray]) -> torch.device | None:
    for x in (pred, *gts):
        if isinstance(x, Tensor):
            return x.device
    return None


def _annotator_tables(pred: LabelArray, gts: Sequence[LabelArray]) -> list[Tensor]:
    """Check inputs; return one ``(#gt regions, #pred segments)`` int64 table per annotator."""
    if isinstance(gts, (Tensor, np.ndarray)):
        if gts.ndim == 2:
            gts = [gts]
        elif gts.ndim == 3:
            gts = list(gts)
    if not isinstance(gts, Sequence) or len(gts) == 0:
        raise ValueError(f"gts: expected a non-empty list of (H, W) label maps, got {type(gts).__name__} "
                         f"of length {len(gts) if isinstance(gts, Sequence) else 'n/a'}")
    device = _label_device(pred, gts)
    p = as_label_tensor(pred, "pred", device)
    if p.ndim != 2:
        raise ValueError(f"pred: expected one (H, W) label map, got shape {tuple(p.shape)}")
    gs = []
    for k, g in enumerate(gts):
        g = as_label_tensor(g, f"gts[{k}]", device)
        if g.shape != p.shape:
            raise ValueError(f"gts[{k}]: expected the shape of pred {tuple(p.shape)}, got {tuple(g.shape)}; "
                             "resize the prediction with resize_labels(pred, gt.shape)")
        gs.append(g.reshape(-1))
    g = torch.stack(gs)                                                      # (K, N)
    k = g.shape[0]
    uniq, pred_ids = torch.unique(p.reshape(-1), return_inverse=True)
    group = torch.arange(k, device=g.device).repeat_interleave(g.shape[1])
    rows, counts = compact_ids(g.reshape(-1), group, k)
    return contingency_blocks(rows, counts, pred_ids.repeat(k), uniq.numel())


def contingency_table(a: LabelArray, b: LabelArray) -> Tensor:
    """Contingency table of two ``(H, W)`` label maps: ``(#labels in a, #labels in b)`` int64, by bincount.

    Rows and columns follow increasing label order; computed on the labels' device.
    """
    return _annotator_tables(b, [a])[0]


def scores_from_contingency(table: Tensor | np.ndarray) -> dict[str, float]:
    """Covering (rows = ground truth covered by columns = prediction), Rand index and VI of one table.

    ``table (G, S)`` non-negative counts. Returns ``dict(covering, ri, vi)`` as Python floats (float64
    arithmetic on the host; the Rand index numerator is exact in int64).
    """
    t = table.detach().cpu() if isinstance(table, Tensor) else torch.from_numpy(np.asarray(table))
    if t.ndim != 2 or t.numel() == 0:
        raise ValueError(f"table: expected a non-empty (G, S) count matrix, got shape {tuple(t.shape)}")
    t = t.long()
    n = int(t.sum())
    if n == 0:
        raise ValueError("table: expected at least one pixel, got an all-zero table")
    a, b = t.sum(1), t.sum(0)
    tf = t.double()
    af, bf = a.double(), b.double()
    iou = tf / (af[:, None] + bf[None, :] - tf)
    covering = float((af * iou.max(1).values).sum() / n)
    disagree2 = int((a * a).sum() + (b * b).sum() - 2 * (t * t).sum())     # 2 x #disagreeing pairs
    ri = 1.0 - disagree2 / (n * (n - 1)) if n > 1 else 1.0
    nz = tf[tf > 0]
    h_joint = -float((nz / n * torch.log(nz / n)).sum())
    h_a = -float((af[af > 0] / n * torch.log(af[af > 0] / n)).sum())
    h_b = -float((bf[bf > 0] / n * torch.log(bf[bf > 0] / n)).sum())
    vi = max(2.0 * h_joint - h_a - h_b, 0.0)               # H(A) + H(B) - 2I = 2H(A,B) - H(A) - H(B)
    return {"covering": covering, "ri": ri, "vi": vi}


def bsds_scores(pred: LabelArray, gts: Sequence[LabelArray]) -> dict[str, float]:
    """Region scores of one ``(H, W)`` prediction against the annotators ``gts`` (list of ``(H, W)``).

    Returns ``dict(covering, pri, vi)``, each the mean over annotators (see the module docstring).
    Prediction ids are arbitrary; resize the prediction to the ground-truth size first.
    """
    return annotator_mean(_annotator_tables(pred, gts))


def annotator_mean(tables: Sequence[Tensor | np.ndarray]) -> dict[str, float]:
    """``dict(covering, pri, vi)``: the scores of each ``(regions, segments)`` table, averaged over tables.

    One table per annotator of one image; :func:`bsds_scores` and the evaluation loop both end here.
    """
    per = [scores_from_contingency(t) for t in tables]
    return {
        "covering": float(np.mean([s["covering"] for s in per])),
        "pri": float(np.mean([s["ri"] for s in per])),
        "vi": float(np.mean([s["vi"] for s in per])),
    }


class BSDSMetrics:
    """Dataset accumulator of :func:`bsds_scores`: mean of the per-image scores over images.

    ``compute()`` returns ``dict(covering, pri, vi, covering_pooled, num_images)``. ``covering_pooled``
    weights images by their pixel count (sum of covered pixels over sum of pixels), which is how the
    BSDS benchmark aggregates the covering over a dataset (its ODS figure for one fixed segmentation);
    it equals ``covering`` when all images have the same size.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.scores: list[dict[str, float]] = []
        self.pixels: list[int] = []

    def update(self, pred: LabelArray, gts: Sequence[LabelArray]) -> dict[str, float]:
        """Score one image ``(H, W)`` against its annotators, store and return its scores."""
        s = bsds_scores(pred, gts)
        self.scores.append(s)
        self.pixels.append(int(np.prod(pred.shape)))
        return s

    def compute(self) -> dict[str, float]:
        """Mean covering / PRI / VI over the images added so far, plus the pixel-weighted covering."""
        if not self.scores:
            raise RuntimeError("BSDSMetrics.compute: no image was added; call update(pred, gts) first")
        cov = np.array([s["covering"] for s in self.scores])
        px = np.array(self.pixels, dtype=np.float64)
        return {
            "covering": float(cov.mean()),
            "pri": float(np.mean([s["pri"] for s in self.scores])),
            "vi": float(np.mean([s["vi"] for s in self.scores])),
            "covering_pooled": float((cov * px).sum() / px.sum()),
            "num_images": len(self.scores),
        }
