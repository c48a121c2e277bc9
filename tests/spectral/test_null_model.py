"""Null-model stopping rule: calibration on a structureless graph, planted partitions recovered exactly."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.spectral import NullBoundThreshold, make_policy, recursive_ncut, reversibilize
from diffcut_gpu.spectral.null_model import null_bound_of, structureless_images
from tests.conftest import planted_attention


def _same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    pairs = torch.unique(torch.stack([a, b]), dim=1)
    return pairs.shape[1] == torch.unique(a).numel() == torch.unique(b).numel()


@pytest.mark.parametrize("seed, sizes", [(0, [40, 50, 60]), (1, [30, 30, 45, 45]), (2, [70, 80])])
def test_planted_partition_recovered_exactly(seed, sizes):
    n = sum(sizes)
    P, truth = planted_attention(2, sizes, seed=seed)
    null, _ = planted_attention(1, [n], seed=100 + seed)  # same size and noise, no blocks
    bound = null_bound_of(recursive_ncut(reversibilize(null), threshold="logotsu"))
    assert 0.5 < bound < 1.0
    seg = recursive_ncut(reversibilize(P), threshold=NullBoundThreshold(bound))
    for b in range(2):
        assert _same_partition(seg.labels[b], truth)
    # the structureless graphs themselves: one segment
    more, _ = planted_attention(3, [n], seed=200 + seed)
    assert recursive_ncut(reversibilize(more), threshold=NullBoundThreshold(bound)).num_segments.tolist() == [1] * 3


def test_uncalibrated_is_logotsu():
    from diffcut_gpu.spectral import LogOtsuThreshold

    P, _ = planted_attention(2, [20, 30, 25], noise=0.5, seed=4)
    seg = recursive_ncut(reversibilize(P), threshold="logotsu")
    policy = make_policy("dynamic")
    assert isinstance(policy, NullBoundThreshold) and policy.bound == 1.0 and policy.needs_full_hierarchy
    torch.testing.assert_close(policy(seg), LogOtsuThreshold()(seg), rtol=0, atol=0)


def test_bound_only_and_with_bound_and_errors():
    P, _ = planted_attention(1, [30, 40], seed=5)
    W = reversibilize(P)
    seg = recursive_ncut(W, threshold=NullBoundThreshold(0.5, base=None))
    assert not seg.thresholds.isinf().any() and seg.thresholds.item() == 0.5
    assert NullBoundThreshold(0.9).with_bound(0.4).bound == 0.4
    assert NullBoundThreshold(0.9).needs_full_hierarchy is False  # calibrated: the recursion prunes
    for bad in (0, 1.5, True, "x"):
        with pytest.raises(ValueError, match="bound"):
            NullBoundThreshold(bad)


def test_null_bound_of_without_candidates_is_one():
    W = torch.ones(1, 6, 6, dtype=torch.float64)
    assert null_bound_of(recursive_ncut(W, threshold="logotsu", min_size=4)) == 1.0


def test_structureless_images():
    x = structureless_images(5, 7)
    assert x.shape == (2, 3, 5, 7) and (x[0] == 0.5).all()
    assert 0 <= float(x[1].min()) and float(x[1].max()) <= 1 and float(x[1].std()) > 0.2
    assert torch.equal(structureless_images(5, 7)[1], x[1])  # seeded: the null is reproducible


@pytest.mark.parametrize("seed", [0, 1])
def test_early_stop_equals_full_hierarchy(seed):
    """Expanding only significant nodes gives the labels of the full hierarchy (nothing else is choosable)."""
    from tests.conftest import attention_like

    W = reversibilize(attention_like(3, 90, seed=seed, temperature=4.0))
    full = recursive_ncut(W, threshold="logotsu", min_size=2, max_depth=6)
    bound = float(full.ncut[torch.isfinite(full.ncut)].median())  # a bound that cuts the hierarchy
    policy = NullBoundThreshold(bound)
    pruned = recursive_ncut(W, threshold=policy, min_size=2, max_depth=6)
    assert pruned.num_nodes < full.num_nodes
    assert torch.equal(pruned.labels, full.labels_at(policy(full)))
