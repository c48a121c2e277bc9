"""Experimental threshold policies (token-weighted Otsu, max modularity) and log Otsu vs float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffcut_gpu.spectral import LogOtsuThreshold, OtsuThreshold, make_policy, recursive_ncut, reversibilize
from diffcut_gpu.spectral.dynamic_extra import (
    MaxModularityThreshold,
    TokenWeightedOtsuThreshold,
    node_modularity,
)


def hierarchy(seed: int, b: int = 3, n: int = 72, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, n, 5, generator=g, dtype=torch.float64)
    P = torch.softmax(3 * feats @ feats.transpose(1, 2) / 5**0.5, -1).to(dtype)
    W = reversibilize(P)
    return W, recursive_ncut(W, threshold="otsu", min_size=2, max_depth=6)


def candidates(seg, b: int) -> tuple[np.ndarray, np.ndarray]:
    cand = ((seg.children[:, 0] >= 0) & torch.isfinite(seg.ncut) & (seg.node_image == b)).numpy()
    return seg.ncut.numpy()[cand], seg.size.numpy()[cand].astype(np.float64)


def otsu_ref(values: np.ndarray, weights: np.ndarray) -> float:
    """Weighted Otsu by brute force over split points of the sorted values."""
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    best, split = -1.0, 0
    for k in range(1, v.size):
        w0, w1 = w[:k].sum(), w[k:].sum()
        m0, m1 = (w[:k] * v[:k]).sum() / w0, (w[k:] * v[k:]).sum() / w1
        between = w0 * w1 * (m1 - m0) ** 2
        if between > best:
            best, split = between, k
    return 0.5 * (v[split - 1] + v[split])


def modularity_ref(W: torch.Tensor, labels: torch.Tensor) -> float:
    d = W.sum(-1)
    vol = d.sum()
    same = labels[:, None] == labels[None, :]
    return float((W * same).sum() / vol - sum((d[labels == s].sum() / vol) ** 2 for s in labels.unique()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_otsu_matches_ref(seed):
    _, seg = hierarchy(seed)
    tau = TokenWeightedOtsuThreshold()(seg)
    for b in range(seg.num_images):
        values, sizes = candidates(seg, b)
        assert tau[b].item() == pytest.approx(otsu_ref(values, sizes), abs=1e-12)


def test_weighted_otsu_equal_weights_is_otsu():
    _, seg = hierarchy(3)
    seg.size = torch.ones_like(seg.size)
    torch.testing.assert_close(TokenWeightedOtsuThreshold()(seg), OtsuThreshold()(seg))


@pytest.mark.parametrize("seed", [0, 1])
def test_log_otsu_matches_ref(seed):
    _, seg = hierarchy(seed)
    tau = LogOtsuThreshold()(seg)
    for b in range(seg.num_images):
        values, _ = candidates(seg, b)
        ref = np.exp(otsu_ref(np.log(values), np.ones_like(values)))
        assert tau[b].item() == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_node_modularity_matches_ref(seed):
    W, seg = hierarchy(seed)
    q = node_modularity(seg, W)
    for tau in (0.3, 0.6, 0.9, 1.5):
        leaves = seg.leaf_nodes(tau)
        labels = seg.labels_at(tau)
        for b in range(seg.num_images):
            got = float(q[leaves[b].unique()].sum())
            assert got == pytest.approx(modularity_ref(W[b], labels[b]), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_max_modularity_matches_ref(seed):
    """The chosen cut has the largest modularity among all cuts of the hierarchy (brute force)."""
    W, seg = hierarchy(seed)
    tau = MaxModularityThreshold(W)(seg)
    chosen = seg.labels_at(tau)
    for b in range(seg.num_images):
        values, _ = candidates(seg, b)
        taus = [float(values.min()) - 1.0] + [float(np.nextafter(v, np.inf)) for v in values]
        best = max(modularity_ref(W[b], seg.labels_at(t)[b]) for t in taus)
        assert modularity_ref(W[b], chosen[b]) == pytest.approx(best, abs=1e-12)
    torch.testing.assert_close(make_policy("modularity", graph=W)(seg), tau)
    assert torch.equal(recursive_ncut(W, threshold=MaxModularityThreshold(W), min_size=2, max_depth=6).labels,
                       chosen)


@pytest.mark.parametrize("name", ["wotsu", "logotsu", "modularity"])
def test_flat_graph_one_segment(name):
    W = torch.ones(2, 32, 32, dtype=torch.float64)
    policy = make_policy(name, graph=W)
    seg = recursive_ncut(W, threshold=policy, min_size=2, max_depth=4)
    assert seg.num_segments.tolist() == [1, 1]
    seg = recursive_ncut(W, threshold=policy, min_size=2, max_depth=0)  # no candidates at all
    assert seg.num_segments.tolist() == [1, 1]


def test_exception():
    _, seg = hierarchy(0)
    with pytest.raises(ValueError, match="graph: expected the"):
        MaxModularityThreshold(None)
    with pytest.raises(ValueError, match="scores partitions on the graph"):
        make_policy("modularity")  # by name without the graph: refused, not a wrong answer
    with pytest.raises(ValueError, match="W: expected the cut graphs"):
        node_modularity(seg, torch.ones(1, 5, 5))
