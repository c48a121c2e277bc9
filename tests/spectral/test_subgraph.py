"""spectral.subgraph: bucket widths, grouping segments into buckets, gathering their induced sub-graphs."""

from __future__ import annotations

import torch

from diffcut_gpu.spectral.subgraph import bucket_widths, gather_subgraphs, make_buckets


def test_gather_subgraphs_matches_indexing():
    W = torch.randn(2, 10, 10)
    image = torch.tensor([1, 0])
    nodes = torch.tensor([[2, 5, 7, 0], [1, 3, 0, 0]])
    sizes = torch.tensor([3, 2])
    out = gather_subgraphs(W, image, nodes, sizes)
    assert torch.equal(out[0, :3, :3], W[1][[2, 5, 7]][:, [2, 5, 7]])
    assert torch.equal(out[1, :2, :2], W[0][[1, 3]][:, [1, 3]])
    assert (out[0, 3:] == 0).all() and (out[1, :, 2:] == 0).all()


def test_make_buckets_groups_by_size():
    assignment = torch.tensor([[0, 0, 2, 2, 2, 0], [1] * 6])
    segment_image = torch.tensor([0, 1, 0])
    buckets = make_buckets(assignment, torch.tensor([2, 0, 1]), segment_image, min_width=2)
    seen = {}
    for bucket in buckets:
        for i, seg_id in enumerate(bucket.segment_ids.tolist()):
            seen[seg_id] = bucket.node_index[i, : int(bucket.sizes[i])].tolist()
    assert seen == {0: [0, 1, 5], 1: [0, 1, 2, 3, 4, 5], 2: [2, 3, 4]}


def test_bucket_widths():
    sizes = torch.arange(1, 1025)
    widths = bucket_widths(sizes, 1000, 16)
    assert (widths >= torch.clamp(sizes, max=1000)).all() and (widths <= 1000).all() and (widths >= 16).all()
    big = sizes > 64
    assert (widths[big].double() / sizes[big] <= 2 ** 0.25 * 1.1).all()  # ~19% padding at most, + rounding to 8
    assert ((widths % 8 == 0) | (widths == 1000)).all()
    assert widths.unique().numel() <= 4 * 7  # a few widths per octave
    assert bucket_widths(torch.tensor([3, 5]), 8, 2).tolist() == [8, 8]
