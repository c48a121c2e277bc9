"""Batched k-means on token descriptors: the clustering baseline with a given number of segments."""

from __future__ import annotations

import torch
from torch import Tensor


def kmeans_segments(X: Tensor, k: Tensor | int, *, iters: int = 50, seed: int = 0) -> Tensor:
    """Cluster each image's tokens into k[b] groups (Lloyd's algorithm, k-means++ start, cosine).

    Args:
        X: (B, N, C) token descriptors (features, or attention rows).
        k: clusters per image, an int or (B,) ints (e.g. the number of NCut segments, for a fair match).
        iters: Lloyd iterations.
        seed: seed of the k-means++ initialisation (deterministic).

    Returns:
        (B, N) int64 labels.
    """
    if X.ndim != 3:
        raise ValueError(f"X: expected (B, N, C), got {tuple(X.shape)}")
    b, n, _ = X.shape
    ks = torch.as_tensor(k).expand(b).tolist() if torch.as_tensor(k).ndim == 0 else torch.as_tensor(k).tolist()
    x = torch.nn.functional.normalize(X.float(), dim=-1)
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = torch.zeros(b, n, dtype=torch.long, device=X.device)
    for i, kk in enumerate(ks):
        kk = max(1, min(int(kk), n))
        pts = x[i]
        centers = [pts[int(torch.randint(n, (1,), generator=g))]]
        for _ in range(1, kk):
            dist = (1 - pts @ torch.stack(centers).T).clamp_min(0).amin(-1)
            probs = dist / dist.sum() if float(dist.sum()) > 0 else torch.full_like(dist, 1.0 / n)
            centers.append(pts[int(torch.multinomial(probs.cpu(), 1, generator=g))])
        c = torch.stack(centers)
        for _ in range(iters):
            assign = (pts @ c.T).argmax(-1)
            new = torch.zeros_like(c).index_add_(0, assign, pts)
            filled = torch.bincount(assign, minlength=kk) > 0
            c = torch.where(filled[:, None], torch.nn.functional.normalize(new, dim=-1), c)
        out[i] = (pts @ c.T).argmax(-1)
    return out
