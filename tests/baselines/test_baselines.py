"""Peer re-implementations: DiffCut-style recursion and k-means behave as their definitions say."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import fiedler, reversibilize, sweep_cut
from diffcut_gpu.baselines import diffcut_style_ncut, kmeans_segments
from diffcut_gpu.baselines.diffcut_style import _best_split
from tests.conftest import attention_like, planted_attention


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_diffcut_style_recovers_planted_blocks():
    P, truth = planted_attention(1, [12, 9, 15], seed=2)
    labels, kept = diffcut_style_ncut(reversibilize(P)[0], tau=0.5)
    assert _same_partition(labels, truth)
    assert len(kept) == 2 and all(v < 0.5 for v in kept)


def test_exact_sweep_never_worse_than_100_thresholds():
    W = reversibilize(attention_like(6, 60, seed=3, temperature=5.0))
    _, x = fiedler(W, method="eigh")
    ours, _ = sweep_cut(W, x)
    for b in range(6):
        theirs, _ = _best_split(W[b], 100)
        assert ours[b].item() <= theirs + 1e-9


def test_diffcut_style_exception():
    with pytest.raises(ValueError, match="W:"):
        diffcut_style_ncut(torch.ones(1, 3, 3))


def test_kmeans_recovers_clusters_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    truth = torch.arange(3).repeat_interleave(10)
    X = (torch.randn(3, 8, generator=g) * 4)[truth] + 0.05 * torch.randn(30, 8, generator=g)
    X = X.unsqueeze(0).repeat(2, 1, 1)
    a = kmeans_segments(X, torch.tensor([3, 3]))
    assert all(_same_partition(a[b], truth) for b in range(2))
    assert torch.equal(a, kmeans_segments(X, 3))
