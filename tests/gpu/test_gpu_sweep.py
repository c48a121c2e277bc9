"""sweep_cut_cuda against the torch sweep cut (same dtype) and its float64 run, mask checked by its NCut."""

from __future__ import annotations

import pytest
import torch

from tests.gpu.conftest import STORAGE, attention_graph, padded_batch, poison_allocator, requires_gpu, stored

pytestmark = requires_gpu


def _cuda(W, x, sizes=None, **kw):
    from diffcut_gpu.kernels import sweep_cut_cuda

    return sweep_cut_cuda(W, x, sizes, **kw)


def _check(W, x, sizes=None, *, min_side=1):
    from diffcut_gpu.spectral.sweep import ncut_value, sweep_cut

    poison_allocator()
    ncut, mask = _cuda(W, x, sizes, min_side=min_side)
    assert ncut.dtype == torch.float64 and mask.dtype == torch.bool
    clean = torch.nan_to_num(W.float(), nan=0.0)  # the references need finite padding
    ref_ncut, ref_mask = sweep_cut(clean, x, sizes, min_side=min_side)
    ref64, _ = sweep_cut(stored(clean), x, sizes, min_side=min_side)
    finite = torch.isfinite(ref64)
    assert torch.equal(torch.isfinite(ncut), finite)
    torch.testing.assert_close(ncut[finite], ref64[finite], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(ncut[finite], ref_ncut[finite], rtol=1e-5, atol=1e-9)
    # The mask is a split with exactly the reported NCut (float64), of the allowed sizes.
    if bool(finite.any()):
        exact = ncut_value(stored(clean)[finite], mask[finite], None if sizes is None else sizes[finite])
        torch.testing.assert_close(exact, ncut[finite], rtol=1e-5, atol=1e-9)
    assert not mask[~finite].any()
    n_valid = torch.full_like(ncut, W.shape[-1]) if sizes is None else sizes.double()
    side = mask.sum(-1).double()
    assert ((side[finite] >= min_side) & (n_valid[finite] - side[finite] >= min_side)).all()
    if sizes is not None:
        valid = torch.arange(W.shape[-1], device="cuda") < sizes.unsqueeze(1)
        assert not mask[~valid].any()
    # Same mask as the reference wherever it is not a near-tie of two split points.
    same = (mask == ref_mask).all(-1)
    assert same.float().mean() >= 0.5
    return ncut, mask


@pytest.mark.parametrize("dtype", STORAGE)
@pytest.mark.parametrize("n", [2, 3, 17, 64, 129, 1000])
def test_matches_ref(n, dtype):
    W = attention_graph(4, n, seed=200 + n, dtype=dtype)
    g = torch.Generator(device="cuda").manual_seed(n)
    x = torch.randn(4, n, device="cuda", generator=g)
    _check(W, x)


def test_large():
    W = attention_graph(2, 4096, seed=3, dtype=torch.float16, rank=16)
    _check(W, torch.randn(2, 4096, device="cuda"))


@pytest.mark.parametrize("dtype", STORAGE)
def test_fiedler_embedding(dtype):
    from diffcut_gpu.spectral.fiedler import eigh_fiedler

    W = attention_graph(3, 256, seed=5, dtype=dtype)
    x = eigh_fiedler(stored(W)).x.float()
    _check(W, x)


@pytest.mark.parametrize("dtype", STORAGE)
def test_padded_bucket(dtype):
    W, sizes = padded_batch([1, 2, 5, 33, 64, 63], seed=8, dtype=dtype)  # NaN padding
    x = torch.randn(W.shape[:2], device="cuda")
    x[~(torch.arange(64, device="cuda") < sizes.unsqueeze(1))] = float("nan")  # padding of x is ignored too
    _check(W, torch.nan_to_num(x, nan=0.0), sizes)


@pytest.mark.parametrize("min_side", [2, 7, 40])
def test_min_side(min_side):
    W = attention_graph(3, 50, seed=31)
    x = torch.randn(3, 50, device="cuda")
    ncut, mask = _check(W, x, min_side=min_side)
    if min_side == 40:
        assert torch.isinf(ncut).all() and not mask.any()


def test_ties_in_x():
    W = attention_graph(2, 100, seed=41, dtype=torch.float16)
    x = torch.randint(0, 4, (2, 100), device="cuda").float()  # many equal entries: stable order decides
    _check(W, x)


def test_repeatable():
    W = attention_graph(3, 333, seed=2, dtype=torch.bfloat16)
    x = torch.randn(3, 333, device="cuda")
    a, b = _cuda(W, x), _cuda(W, x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_exception():
    W = attention_graph(2, 8, seed=1)
    x = torch.randn(2, 8, device="cuda")
    with pytest.raises(ValueError, match="x: expected shape"):
        _cuda(W, x[:, :5])
    with pytest.raises(ValueError, match="min_side"):
        _cuda(W, x, min_side=0)
    with pytest.raises(ValueError, match="dtype"):
        _cuda(W.double(), x)
    with pytest.raises(ValueError, match="CUDA tensor"):
        _cuda(W.cpu(), x.cpu())
