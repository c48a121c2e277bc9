"""NCut values and the exact sweep cut, against brute force over every split point."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu import ncut_value, reversibilize, sweep_cut
from tests.conftest import attention_like


def _brute_ncut(W: torch.Tensor, mask: torch.Tensor) -> float:
    W = W.double()
    s, t = mask.double(), (~mask).double()
    cut = s @ W @ t
    d = W.sum(-1)
    return float(cut / (s @ d) + cut / (t @ d))


def _brute_sweep(W: torch.Tensor, x: torch.Tensor, min_side: int = 1) -> tuple[float, torch.Tensor]:
    n = W.shape[-1]
    order = torch.sort(x.double(), stable=True).indices
    best, best_mask = float("inf"), None
    for i in range(min_side - 1, n - min_side):
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[: i + 1]] = True
        value = _brute_ncut(W, mask)
        if value < best:
            best, best_mask = value, mask
    return best, best_mask


@pytest.mark.parametrize("n", [2, 3, 17, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_brute_force(n, dtype):
    g = torch.Generator().manual_seed(n)
    W = reversibilize(attention_like(3, n, seed=n)).to(dtype)
    x = torch.randn(3, n, generator=g)
    ncut, mask = sweep_cut(W, x)
    for b in range(3):
        ref, ref_mask = _brute_sweep(W[b], x[b])
        assert ncut[b].item() == pytest.approx(ref, rel=1e-4 if dtype == torch.float32 else 1e-10)
        assert torch.equal(mask[b], ref_mask)


def test_min_side():
    W = reversibilize(attention_like(2, 20, seed=3))
    x = torch.randn(2, 20, generator=torch.Generator().manual_seed(0))
    ncut, mask = sweep_cut(W, x, min_side=5)
    for b in range(2):
        ref, ref_mask = _brute_sweep(W[b], x[b], min_side=5)
        assert ncut[b].item() == pytest.approx(ref, rel=1e-10)
        assert torch.equal(mask[b], ref_mask)
        assert 5 <= int(mask[b].sum()) <= 15


def test_no_allowed_split_is_inf():
    W = reversibilize(attention_like(1, 6))
    ncut, mask = sweep_cut(W, torch.arange(6.0).unsqueeze(0), min_side=4)
    assert ncut.item() == float("inf") and not mask.any()


def test_padded_equals_unpadded():
    g = torch.Generator().manual_seed(5)
    sizes = [7, 12, 3]
    n = 16
    W = torch.zeros(3, n, n, dtype=torch.float64)
    x = torch.zeros(3, n)
    refs = []
    for b, s in enumerate(sizes):
        Wb = reversibilize(attention_like(1, s, seed=b))[0]
        xb = torch.randn(s, generator=g)
        W[b, :s, :s] = Wb
        W[b, s:, :] = 7.0  # garbage in the padding must be ignored
        x[b, :s] = xb
        x[b, s:] = -100.0
        refs.append(sweep_cut(Wb.unsqueeze(0), xb.unsqueeze(0)))
    ncut, mask = sweep_cut(W, x, torch.tensor(sizes))
    for b, s in enumerate(sizes):
        assert ncut[b].item() == pytest.approx(refs[b][0].item(), rel=1e-12)
        assert torch.equal(mask[b, :s], refs[b][1][0]) and not mask[b, s:].any()


def test_planted_split_found_exactly():
    n = 10
    W = torch.full((1, n, n), 0.01, dtype=torch.float64)
    W[0, :4, :4] = 1.0
    W[0, 4:, 4:] = 1.0
    x = torch.tensor([[-1.0, -0.9, -1.1, -1.0, 1.0, 0.8, 1.2, 0.9, 1.0, 1.1]])
    ncut, mask = sweep_cut(W, x)
    assert torch.equal(mask[0], torch.arange(n) < 4)
    assert ncut.item() == pytest.approx(_brute_ncut(W[0], mask[0]))


def test_ncut_value_matches_ref_and_empty_side():
    W = reversibilize(attention_like(2, 9, seed=2))
    mask = torch.rand(2, 9, generator=torch.Generator().manual_seed(1)) < 0.5
    mask[:, 0] = True
    mask[:, 1] = False
    out = ncut_value(W, mask)
    for b in range(2):
        assert out[b].item() == pytest.approx(_brute_ncut(W[b], mask[b]), rel=1e-12)
    assert ncut_value(W, torch.zeros(2, 9, dtype=torch.bool)).isinf().all()


def test_zero_degree_nodes_no_nan():
    W = torch.zeros(1, 6, 6, dtype=torch.float64)
    W[0, :3, :3] = 1.0  # nodes 3..5 are isolated
    ncut, mask = sweep_cut(W, torch.arange(6.0).unsqueeze(0))
    assert torch.isfinite(ncut).all()
    assert ncut.item() == 0.0  # cutting the isolated nodes off costs nothing
    assert torch.isfinite(ncut_value(W, mask)).all()


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.ones(1, 3, 3), torch.ones(1, 4)), "x:"),
        ((torch.ones(1, 3, 3), torch.ones(1, 3), torch.tensor([4])), "sizes"),
        ((torch.ones(1, 3, 3), torch.ones(1, 3), torch.tensor([1.0])), "sizes"),
        ((torch.ones(2, 3), torch.ones(2, 3)), "W:"),
    ],
)
def test_exception(args, match):
    with pytest.raises(ValueError, match=match):
        sweep_cut(*args)


def test_exception_min_side():
    with pytest.raises(ValueError, match="min_side"):
        sweep_cut(torch.ones(1, 3, 3), torch.ones(1, 3), min_side=0)


def _nan_at(t: torch.Tensor, *index) -> torch.Tensor:
    t = t.clone()
    t[index] = float("nan")
    return t


@pytest.mark.parametrize(
    "W, x, sizes, match",
    [
        (_nan_at(torch.ones(2, 4, 4), 1, 2, 3), torch.rand(2, 4), None, r"W: expected finite values"),
        (torch.full((1, 4, 4), float("inf")), torch.rand(1, 4), None, r"W: expected finite values"),
        (-torch.ones(1, 4, 4), torch.rand(1, 4), None, r"W: expected non-negative entries"),
        (torch.ones(1, 4, 4), _nan_at(torch.rand(1, 4), 0, 1), None, r"x: expected finite values"),
        (torch.ones(1, 4, 4), torch.rand(1, 4).double(), None, None),  # any float dtype of x is fine
    ],
)
def test_exception_bad_values_named_up_front(W, x, sizes, match):
    if match is None:
        assert sweep_cut(W, x)[0].shape == (1,)
        return
    with pytest.raises(ValueError, match=match):
        sweep_cut(W, x, sizes)


def test_bad_values_in_padding_are_ignored():
    W = reversibilize(attention_like(1, 6, seed=2))
    padded = torch.full((1, 8, 8), float("nan"), dtype=W.dtype)
    padded[:, :6, :6] = W
    padded[0, 7, 7] = -1.0
    x = torch.cat([torch.rand(1, 6, dtype=W.dtype), torch.full((1, 2), float("nan"), dtype=W.dtype)], 1)
    ncut, mask = sweep_cut(padded, x, torch.tensor([6]))
    ref_ncut, ref_mask = sweep_cut(W, x[:, :6])
    torch.testing.assert_close(ncut, ref_ncut, rtol=1e-12, atol=0)
    assert torch.equal(mask[:, :6], ref_mask) and not mask[:, 6:].any()


def test_empty_batch():
    ncut, mask = sweep_cut(torch.ones(0, 5, 5), torch.ones(0, 5))
    assert ncut.shape == (0,) and ncut.dtype == torch.float64
    assert mask.shape == (0, 5) and mask.dtype == torch.bool
    ncut, mask = sweep_cut(torch.ones(0, 5, 5), torch.ones(0, 5), torch.zeros(0, dtype=torch.long))
    assert ncut.shape == (0,) and mask.shape == (0, 5)
