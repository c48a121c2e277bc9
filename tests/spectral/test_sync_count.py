"""Host synchronisations of one batched ``recursive_ncut`` call, counted on CPU (``benchmarks.syncs``).

The recursion promises at most two per level (its level read, and a count for the float64 rescue),
whatever the batch size and the number of segments. Before that change one call on 8 graphs of 1024
tokens made 1,025 and on 32 graphs 2,118; now 19 for either (docs/results/bench_syncs.json).
"""

from __future__ import annotations

import collections

import pytest
import torch

from benchmarks.syncs import SyncCounter
from diffcut_gpu import recursive_ncut, reversibilize
from diffcut_gpu._types import LanczosParams
from tests.conftest import attention_like


def count_syncs(W: torch.Tensor, **kwargs) -> tuple[int, int, collections.Counter]:
    """(host reads, levels solved, reads by op) of one ``recursive_ncut`` call."""
    with SyncCounter() as counter:
        seg = recursive_ncut(W, backend="torch", **kwargs)
    levels = int(seg.level.max()) + 1  # levels of solves: the deepest nodes' level was solved too
    return counter.total, levels, counter.counts


# The solvers a GPU runs (the torch twins; the CPU's ARPACK slot of the op table reads the host by design),
# with fixed step blocks without reads, as on a GPU; a short budget keeps the test quick (the count does not
# depend on it: a budget the solves miss only sends more graphs to the rescue, read once per level).
DEVICE = LanczosParams(sync="device", max_iter=24)
CONSTANT = 10
"""Reads outside the level loop: the graph check (a few), the threshold policy and ``labels_at``."""


def test_smoke_counter_sees_host_reads():
    x = torch.arange(6.0)
    with SyncCounter() as counter:
        x.sum().item()
        x[x > 2]
        torch.nonzero(x)
        x.tolist()
        x.to("cpu", copy=True)
        torch.bincount(x.long())
    assert counter.total == 6, counter.counts


@pytest.mark.parametrize("threshold", [0.5, "dynamic"])
def test_at_most_two_reads_per_level_whatever_the_batch(threshold):
    # N = 240 takes Lanczos at the first level (float32: a rescue is possible there), eigh below.
    W = reversibilize(attention_like(8, 240, seed=3, temperature=6.0, dtype=torch.float32))
    one, levels_one, by_op_one = count_syncs(W[:1], threshold=threshold, max_depth=6, params=DEVICE)
    eight, levels_eight, by_op_eight = count_syncs(W, threshold=threshold, max_depth=6, params=DEVICE)
    assert levels_one >= 4 and levels_eight >= 4  # a real recursion, not one level
    assert one <= 2 * levels_one + CONSTANT, by_op_one
    assert eight <= 2 * levels_eight + CONSTANT, by_op_eight
    # Eight images (eight times the segments per level) add at most the rescue read of some levels.
    assert eight <= one + levels_eight + 2 * max(0, levels_eight - levels_one), (by_op_one, by_op_eight)


def test_device_policy_gives_the_host_policy_segments():
    W = reversibilize(attention_like(3, 300, seed=5, temperature=5.0, dtype=torch.float32))
    for threshold in (0.4, "dynamic"):
        host = recursive_ncut(W, threshold=threshold, params=LanczosParams(sync="host"), backend="torch")
        device = recursive_ncut(W, threshold=threshold, params=LanczosParams(sync="device"), backend="torch")
        assert torch.equal(host.labels, device.labels)
        assert torch.equal(host.parent, device.parent)
        torch.testing.assert_close(host.ncut, device.ncut, rtol=1e-6, atol=0)
