"""Threshold policies: on-device batched rules against plain per-image numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffcut_gpu import (
    ConstantThreshold,
    LargestGapThreshold,
    NullModelThreshold,
    OtsuThreshold,
    make_policy,
    recursive_ncut,
    reversibilize,
)
from diffcut_gpu.spectral.thresholds import sorted_candidates
from tests.conftest import attention_like


def _otsu_ref(v: np.ndarray) -> float:
    best, tau = -1.0, None
    for k in range(1, v.size):
        lo, hi = v[:k], v[k:]
        between = k * (v.size - k) * (hi.mean() - lo.mean()) ** 2
        if between > best + 1e-15:
            best, tau = between, 0.5 * (v[k - 1] + v[k])
    return tau


def _gap_ref(v: np.ndarray) -> float:
    k = int(np.argmax(np.diff(v)))
    return 0.5 * (v[k] + v[k + 1])


def _candidates(seg, b):
    cand = (seg.children[:, 0] >= 0) & torch.isfinite(seg.ncut) & (seg.node_image == b)
    return np.sort(seg.ncut[cand].numpy())


@pytest.fixture(scope="module")
def hierarchy():
    W = reversibilize(attention_like(5, 60, seed=21, temperature=6.0))
    return recursive_ncut(W, threshold="otsu", min_size=2, max_depth=5)


@pytest.mark.parametrize("policy, ref", [(OtsuThreshold(), _otsu_ref), (LargestGapThreshold(), _gap_ref)])
def test_matches_ref(hierarchy, policy, ref):
    tau = policy(hierarchy)
    for b in range(hierarchy.num_images):
        v = _candidates(hierarchy, b)
        assert v.size >= 2
        assert tau[b].item() == pytest.approx(ref(v), rel=1e-12)


def test_sorted_candidates(hierarchy):
    values, count = sorted_candidates(hierarchy)
    for b in range(hierarchy.num_images):
        v = _candidates(hierarchy, b)
        assert int(count[b]) == v.size
        assert np.allclose(values[b, : v.size].numpy(), v)
        assert torch.isinf(values[b, v.size :]).all()


def test_degenerate_rows():
    W = torch.ones(1, 16, 16)  # every split has NCut 1: no structure
    seg = recursive_ncut(W, threshold="otsu", min_size=2)
    assert (seg.labels == 0).all()
    seg1 = recursive_ncut(reversibilize(attention_like(1, 8, seed=1)), threshold="otsu", min_size=4, max_depth=1)
    assert int(sorted_candidates(seg1)[1][0]) == 1 and seg1.thresholds.item() == 1.0


def test_constant_and_null_and_make_policy(hierarchy):
    assert torch.equal(ConstantThreshold(0.3)(hierarchy), torch.full((5,), 0.3, dtype=torch.float64))
    assert torch.equal(NullModelThreshold()(hierarchy), torch.ones(5, dtype=torch.float64))
    assert isinstance(make_policy("gap"), LargestGapThreshold)
    assert isinstance(make_policy(0.7), ConstantThreshold)
    custom = OtsuThreshold()
    assert make_policy(custom) is custom
    with pytest.raises(ValueError, match="threshold"):
        make_policy("median")
    with pytest.raises(ValueError, match="threshold"):
        ConstantThreshold(0)


def test_cli_accepts_every_policy_name():
    from diffcut_gpu.cli.options import THRESHOLD_NAMES
    from diffcut_gpu.spectral.thresholds import policy_names

    assert THRESHOLD_NAMES == policy_names()
    assert {"dynamic", "logotsu", "otsu", "gap", "null", "wotsu", "modularity"} <= set(THRESHOLD_NAMES)
