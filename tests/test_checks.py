"""diffcut_gpu._checks: the shared input checks, called directly and through ``fiedler``."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu._checks import (
    check_graph,
    check_graph_values,
    check_grid,
    check_int,
    check_row_stochastic,
    check_sizes,
    check_transition,
)
from diffcut_gpu.spectral.fiedler import fiedler
from tests.conftest import attention_like


def test_exception_only_in_valid_block():
    """NaN or negative entries in the padding are ignored; inside the valid block they raise."""
    W = torch.ones(1, 4, 4)
    W[0, 3, :] = float("nan")
    W[0, :, 3] = -1.0
    lam, x = fiedler(W, sizes=torch.tensor([3]))
    assert torch.isfinite(lam).all() and torch.isfinite(x).all() and x[0, 3] == 0
    with pytest.raises(ValueError, match="W: expected finite"):
        fiedler(W, sizes=torch.tensor([4]))


def test_graph_values_padding_made_harmless():
    """Bad padding is zeroed in the returned graph, the valid block is returned as it was."""
    W = torch.rand(2, 5, 5, dtype=torch.float64)
    W = W + W.mT
    W[0, 3:, :] = float("nan")
    W[0, :, 3:] = -2.0
    out = check_graph_values("W", W, torch.tensor([3, 5]))
    assert torch.equal(out[0, :3, :3], W[0, :3, :3]) and torch.equal(out[1], W[1])
    assert (out[0, 3:] == 0).all() and (out[0, :, 3:] == 0).all()
    clean = W[1:].clone()
    assert check_graph_values("W", clean) is clean  # nothing to sanitise: the same tensor back


def test_graph_values_symmetry():
    W = torch.rand(1, 6, 6, dtype=torch.float64)
    W = W + W.mT
    check_graph("W", W)
    with pytest.raises(ValueError, match="W: expected a symmetric graph"):
        check_graph("W", attention_like(1, 6))
    with pytest.raises(ValueError, match="W: expected entries <="):
        check_graph("W", torch.full((1, 3, 3), 1e38))


def test_transition():
    P = attention_like(2, 7)
    check_transition("P", P)
    check_row_stochastic("P", P.half())  # looser tolerance for half storage
    with pytest.raises(ValueError, match="P: expected rows summing to 1"):
        check_transition("P", 1.01 * P)
    with pytest.raises(ValueError, match="P: expected non-negative"):
        check_transition("P", -P)


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        (torch.tensor([4]), r"sizes: expected shape \(2,\)"),
        (torch.tensor([4, 0]), r"sizes: expected values in \[1, 4\]"),
        (torch.tensor([4, 5]), r"sizes: expected values in \[1, 4\]"),
        (torch.tensor([4.0, 3.0]), "sizes: expected an integer"),
        (torch.tensor([True, True]), "sizes: expected an integer"),
    ],
)
def test_sizes_exception(sizes, match):
    check_sizes(torch.tensor([4, 1]), 2, 4)
    check_sizes(None, 2, 4)
    with pytest.raises(ValueError, match=match):
        check_sizes(sizes, 2, 4)


def test_grid_and_int():
    assert check_grid((3, 4), 12) == (3, 4) and check_grid([2.0, 6], 12) == (2, 6)
    with pytest.raises(ValueError, match="grid: expected h \\* w == N = 12"):
        check_grid((3, 5), 12)
    with pytest.raises(ValueError, match="grid: expected \\(h, w\\) positive ints"):
        check_grid((0, 12), 12)
    assert check_int("k", 3, 1) == 3
    for bad in (0, True, 2.0, "3"):
        with pytest.raises(ValueError, match="k: expected an integer >= 1"):
            check_int("k", bad, 1)
