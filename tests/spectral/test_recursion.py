"""Level-synchronous recursive NCut: planted partitions, batching, padding, hierarchy, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffcut_gpu import (
    ConstantThreshold,
    LargestGapThreshold,
    NullModelThreshold,
    OtsuThreshold,
    cosine_affinity,
    ncut_value,
    recursive_ncut,
    reversibilize,
)
from tests.conftest import attention_like, planted_attention


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to renaming of labels."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("threshold", [0.5, "dynamic", "otsu", "gap", "null"])
def test_planted_partition_recovered(threshold):
    P, truth = planted_attention(2, [20, 12, 16, 8], seed=1)
    seg = recursive_ncut(reversibilize(P), threshold=threshold, min_size=2)
    for b in range(2):
        if threshold in ("null",):
            # The null rule keeps splitting while any cut beats a fully mixed walk: a refinement of the truth.
            assert all(len(set(truth[seg.labels[b] == k].tolist())) == 1 for k in seg.labels[b].unique())
        else:
            assert _same_partition(seg.labels[b], truth)


def test_labels_consecutive_and_shape():
    P, _ = planted_attention(3, [10, 10, 10], seed=2)
    seg = recursive_ncut(reversibilize(P), threshold=0.5)
    assert seg.labels.shape == (3, 30) and seg.labels.dtype == torch.long
    for b in range(3):
        assert seg.labels[b].unique().tolist() == list(range(int(seg.num_segments[b])))


def test_batched_equals_one_at_a_time():
    W = reversibilize(attention_like(4, 48, seed=3, temperature=6.0))
    batch = recursive_ncut(W, threshold="dynamic", min_size=3)
    for b in range(4):
        single = recursive_ncut(W[b : b + 1], threshold="dynamic", min_size=3)
        assert torch.equal(batch.labels[b], single.labels[0])
        assert batch.thresholds[b].item() == pytest.approx(single.thresholds[0].item())


def test_deterministic():
    W = reversibilize(attention_like(2, 40, seed=4, temperature=6.0))
    a = recursive_ncut(W, threshold=0.6, min_size=2)
    b = recursive_ncut(W, threshold=0.6, min_size=2)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.ncut, b.ncut)


@pytest.mark.parametrize("method", ["eigh", "lanczos"])
def test_methods_agree(method):
    P, truth = planted_attention(2, [15, 15, 10], seed=5)
    seg = recursive_ncut(reversibilize(P), threshold=0.5, method=method)
    assert all(_same_partition(seg.labels[b], truth) for b in range(2))


def test_node_ncut_matches_its_split():
    W = reversibilize(attention_like(2, 40, seed=6, temperature=6.0))
    seg = recursive_ncut(W, threshold="dynamic", min_size=2)
    # For every internal node, the stored NCut equals ncut_value of its two children on its sub-graph.
    path = seg.path
    for node in torch.nonzero(seg.children[:, 0] >= 0).squeeze(1).tolist():
        b, lvl = int(seg.node_image[node]), int(seg.level[node])
        tokens = torch.nonzero(path[lvl, b] == node).squeeze(1)
        left = path[lvl + 1, b, tokens] == seg.children[node, 0]
        sub = W[b][tokens][:, tokens].unsqueeze(0)
        assert ncut_value(sub, left.unsqueeze(0)).item() == pytest.approx(seg.ncut[node].item(), rel=1e-9)
        assert int(seg.size[seg.children[node, 0]]) == int(left.sum())


def test_hierarchy_consistency_and_monotone_labels_at():
    W = reversibilize(attention_like(2, 64, seed=7, temperature=6.0))
    seg = recursive_ncut(W, threshold="dynamic", min_size=2, max_depth=5)
    kids = seg.children[seg.children[:, 0] >= 0]
    assert torch.equal(seg.parent[kids[:, 0]], seg.parent[kids[:, 1]])
    assert (seg.size[kids].sum(-1) == seg.size[seg.parent[kids[:, 0]]]).all()
    assert (seg.level[kids[:, 0]] == seg.level[seg.parent[kids[:, 0]]] + 1).all()
    taus = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 2.0]
    for lo, hi in itertools.pairwise(taus):
        coarse, fine = seg.leaf_nodes(lo), seg.leaf_nodes(hi)
        for b in range(2):
            # Every fine segment lies inside one coarse segment, and there are at least as many.
            for k in fine[b].unique():
                assert coarse[b][fine[b] == k].unique().numel() == 1
            assert fine[b].unique().numel() >= coarse[b].unique().numel()
    assert (seg.labels_at(0.0) == 0).all()


def test_labels_at_reproduces_constant_threshold():
    W = reversibilize(attention_like(2, 50, seed=8, temperature=6.0))
    full = recursive_ncut(W, threshold="dynamic", min_size=2)
    for tau in (0.2, 0.5, 0.9):
        direct = recursive_ncut(W, threshold=tau, min_size=2)
        assert torch.equal(full.labels_at(tau), direct.labels)


def test_pruned_hierarchy_refuses_larger_tau():
    W = reversibilize(attention_like(1, 30, seed=9, temperature=6.0))
    seg = recursive_ncut(W, threshold=0.3)
    seg.labels_at(0.2)
    with pytest.raises(ValueError, match="full_hierarchy=True"):
        seg.labels_at(0.6)
    assert torch.equal(recursive_ncut(W, threshold=0.3, full_hierarchy=True).labels, seg.labels)


def test_min_size_and_max_depth():
    W = reversibilize(attention_like(2, 64, seed=10, temperature=8.0))
    seg = recursive_ncut(W, threshold=2.0, min_size=5, max_depth=3)
    assert int(seg.level.max()) <= 3 and int(seg.num_segments.max()) <= 8
    for b in range(2):
        assert torch.bincount(seg.labels[b]).min() >= 5
    assert (recursive_ncut(W, max_depth=0).labels == 0).all()


def test_feature_graph_and_fp16_storage():
    g = torch.Generator().manual_seed(11)
    centers = torch.randn(3, 16, generator=g) * 3
    truth = torch.arange(3).repeat_interleave(12)
    F = centers[truth] + 0.1 * torch.randn(36, 16, generator=g)
    W = cosine_affinity(F.unsqueeze(0), alpha=10.0)
    for w in (W, W.half()):
        seg = recursive_ncut(w, threshold=0.5, min_size=2)
        assert _same_partition(seg.labels[0], truth)


def test_no_structure_single_segment_under_dynamic():
    W = torch.ones(2, 32, 32)
    for policy in ("dynamic", "otsu", "gap", "null"):
        assert (recursive_ncut(W, threshold=policy).labels == 0).all(), policy


def test_disconnected_graph_no_nan():
    W = torch.zeros(1, 20, 20, dtype=torch.float64)
    W[0, :8, :8] = 1.0
    W[0, 8:15, 8:15] = 1.0  # nodes 15..19 have zero degree
    seg = recursive_ncut(W, threshold=0.5, min_size=1)
    assert torch.isfinite(seg.ncut[seg.children[:, 0] >= 0]).all()
    assert seg.labels[0, :8].unique().numel() == 1 and seg.labels[0, 8:15].unique().numel() == 1
    assert seg.labels[0, 0] != seg.labels[0, 8]


def test_policies_objects_and_custom_policy():
    W = reversibilize(attention_like(1, 40, seed=12, temperature=6.0))
    for policy in (ConstantThreshold(0.4), OtsuThreshold(), LargestGapThreshold(), NullModelThreshold()):
        seg = recursive_ncut(W, threshold=policy, min_size=2)
        assert seg.labels.shape == (1, 40)

    class Median:
        needs_full_hierarchy = True

        def __call__(self, h):
            internal = h.ncut[(h.children[:, 0] >= 0)]
            return internal.median().reshape(1)

    seg = recursive_ncut(W, threshold=Median(), min_size=2)
    assert seg.thresholds.shape == (1,)


@pytest.mark.parametrize(
    "W, kwargs, match",
    [
        (torch.full((1, 4, 4), float("nan")), {}, "finite"),
        (-torch.ones(1, 4, 4), {}, "non-negative"),
        (torch.ones(1, 4, 5), {}, "square"),
        (torch.ones(1, 1, 1), {}, "at least 2 nodes"),
        (torch.rand(1, 6, 6) + torch.eye(6) * 5, {}, "symmetric"),
        (torch.ones(1, 4, 4), {"min_size": 0}, "min_size"),
        (torch.ones(1, 4, 4), {"max_depth": -1}, "max_depth"),
        (torch.ones(1, 4, 4), {"threshold": "sometimes"}, "threshold"),
        (torch.ones(1, 4, 4), {"threshold": -0.5}, "threshold"),
        (torch.ones(1, 4, 4), {"threshold": "otsu", "full_hierarchy": False}, "full_hierarchy"),
        (torch.ones(1, 4, 4, dtype=torch.long), {}, "floating"),
    ],
)
def test_exception(W, kwargs, match):
    with pytest.raises(ValueError, match=match):
        recursive_ncut(W, **kwargs)


def test_empty_batch():
    seg = recursive_ncut(torch.zeros(0, 8, 8))
    assert seg.labels.shape == (0, 8)


@pytest.mark.slow
def test_batched_equals_one_at_a_time_on_the_lanczos_path():
    """Sub-graphs above EIGH_MAX_N go through batched Lanczos (with per-graph stopping): a batch still gives
    every image exactly its one-at-a-time labels and NCut values."""
    from benchmarks.common import region_attention

    W = reversibilize(region_attention(3, 20, 20, seed=4)).float()  # 400 tokens: Lanczos for two levels
    batch = recursive_ncut(W, threshold=0.5, min_size=4)
    assert int(batch.num_segments.min()) >= 3
    for b in range(3):
        single = recursive_ncut(W[b : b + 1], threshold=0.5, min_size=4)
        assert torch.equal(batch.labels[b], single.labels[0])
        mine = batch.node_image == b
        assert torch.equal(batch.ncut[mine], single.ncut)


def test_lanczos_and_eigh_recursions_agree():
    """The default solver mix (Lanczos above EIGH_MAX_N) and dense eigh at every level agree on region graphs."""
    from benchmarks.common import region_attention

    W = reversibilize(region_attention(2, 20, 20, seed=6)).float()
    fast = recursive_ncut(W, threshold=0.5, min_size=4)
    dense = recursive_ncut(W, threshold=0.5, min_size=4, method="eigh")
    for b in range(2):
        assert _same_partition(fast.labels[b], dense.labels[b])


def test_segmentation_keeps_no_reference_to_the_graph():
    W = reversibilize(attention_like(1, 30, seed=14, temperature=6.0))
    assert "graph" not in recursive_ncut(W, threshold=0.5).extras
