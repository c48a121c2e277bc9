"""``Segmentation`` re-cuts: segment-count control (``labels_for_count``) against a per-image reference."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.spectral import recursive_ncut, reversibilize
from tests.conftest import attention_like, planted_attention


@pytest.fixture(scope="module")
def full():
    W = reversibilize(attention_like(3, 64, seed=5, temperature=5.0))
    return recursive_ncut(W, threshold="otsu", min_size=2, max_depth=5)


def _greedy_ref(seg, b: int, k: int) -> set[int]:
    """Split set of image b by plain Python: k - 1 times the open node of lowest NCut (ties: lowest id)."""
    ncut, children, parent = seg.ncut.tolist(), seg.children.tolist(), seg.parent.tolist()
    split: set[int] = set()
    for _ in range(k - 1):
        open_ = [v for v in range(seg.num_nodes) if seg.node_image[v] == b and children[v][0] >= 0
                 and ncut[v] != float("inf") and v not in split and (parent[v] < 0 or parent[v] in split)]
        if not open_:
            break
        split.add(min(open_, key=lambda v: (ncut[v], v)))
    return split


def test_exact_count_and_matches_ref(full):
    leaves = full.labels_at(float("inf")).amax(-1) + 1
    for k in (1, 2, 3, 5, 8):
        labels = full.labels_for_count(k)
        assert torch.equal(labels.amax(-1) + 1, torch.clamp(leaves, max=k))
        got = full.split_nodes_for_count(k)
        for b in range(full.num_images):
            ref = _greedy_ref(full, b, k)
            assert set(torch.nonzero(got & (full.node_image == b)).squeeze(1).tolist()) == ref


def test_nested_in_k(full):
    """Every segment at K + 1 lies inside one segment at K."""
    previous = full.labels_for_count(1)
    assert (previous == 0).all()
    for k in range(2, 12):
        labels = full.labels_for_count(k)
        for b in range(full.num_images):
            pairs = torch.unique(torch.stack([labels[b], previous[b]]), dim=1)
            assert torch.unique(pairs[0]).numel() == pairs.shape[1]  # each fine label has one coarse parent
        previous = labels


def test_more_than_leaves_gives_all_leaves(full):
    assert torch.equal(full.labels_for_count(10_000), full.labels_at(float("inf")))


def test_per_image_counts_and_planted():
    P, truth = planted_attention(2, [20, 24, 28], seed=3)
    seg = recursive_ncut(reversibilize(P), threshold="otsu", min_size=4, max_depth=4)
    labels = seg.labels_for_count(torch.tensor([3, 1]))
    assert (labels[1] == 0).all()
    # three planted blocks: the two lowest-NCut splits are the block boundaries
    pairs = torch.unique(torch.stack([labels[0], truth]), dim=1)
    assert pairs.shape[1] == 3 and torch.unique(pairs[0]).numel() == 3


def test_bad_counts(full):
    for bad in (0, 2.5, torch.tensor([1, 2])):
        with pytest.raises(ValueError, match="segments"):
            full.labels_for_count(bad)
