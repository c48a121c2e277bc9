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


def test_width_ladder_lists_every_bucket_width():
    from diffcut_gpu.spectral.subgraph import bucket_widths, width_ladder

    for n in (2, 17, 100, 224, 1024, 4096):
        for min_width in (2, 16):
            widths = set(bucket_widths(torch.arange(1, n + 1), n, min_width).tolist())
            assert width_ladder(n, min_width) == tuple(sorted(widths)), (n, min_width)


def test_buckets_from_histogram_equal_make_buckets():
    from diffcut_gpu.spectral.subgraph import buckets_from_histogram, width_histogram

    g = torch.Generator().manual_seed(13)
    assignment = torch.randint(0, 9, (3, 40), generator=g)
    segment_image = torch.arange(9) % 3
    ids = torch.tensor([7, 1, 4, 0, 8])
    size = torch.bincount(assignment.reshape(-1), minlength=9)
    hist = width_histogram(size[ids], 40, min_width=2).tolist()
    for cap in (1 << 26, 100):  # one bucket per width, or chunks of one or two segments
        one = make_buckets(assignment, ids, segment_image, min_width=2, max_elements=cap)
        two = buckets_from_histogram(assignment, ids, segment_image, size, hist, min_width=2, max_elements=cap)
        assert len(one) == len(two) > 1
        for a, b in zip(one, two):
            for x, y in zip((a.segment_ids, a.image_index, a.node_index, a.sizes),
                            (b.segment_ids, b.image_index, b.node_index, b.sizes)):
                assert torch.equal(x, y)


def test_gather_subgraphs_device_policy_and_whole_graphs():
    W = torch.rand(3, 12, 12)
    image = torch.tensor([2, 0])
    nodes = torch.tensor([[1, 4, 9, 0], [0, 3, 5, 11]])
    sizes = torch.tensor([3, 4])
    host = gather_subgraphs(W, image, nodes, sizes, sync="host")
    assert torch.equal(gather_subgraphs(W, image, nodes, sizes, sync="device"), host)
    every = torch.arange(12).expand(3, 12)
    assert gather_subgraphs(W, torch.arange(3), every, torch.full((3,), 12), whole=True) is W
    assert gather_subgraphs(W, torch.arange(3), every, torch.full((3,), 12)) is W
    assert torch.equal(gather_subgraphs(W, torch.tensor([1]), every[:1], torch.tensor([12])), W[1:2])
