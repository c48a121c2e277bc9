"""Multi-resolution aggregation of attention maps (diffcut_gpu/attention/aggregate.py)."""

import pytest
import torch
import torch.nn.functional as F

from diffcut_gpu.attention import aggregate_attention, resample_matrix, resize_transition


def _random_transition(b, n, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(3 * torch.randn(b, n, n, generator=g, dtype=dtype), dim=-1)


def _resize_ref(P, src, dst):
    """Independent twin built from torch's own resizers, in float64."""
    (h, w), (H, W) = src, dst
    B = P.shape[0]
    keys = P.double().reshape(B * h * w, 1, h, w)
    if H >= h and W >= w:
        keys = F.interpolate(keys, size=(H, W), mode="bilinear", align_corners=False)
    else:
        keys = F.adaptive_avg_pool2d(keys, (H, W))
    keys = keys.reshape(B, h * w, H * W)
    keys = keys / keys.sum(-1, keepdim=True)
    rows = keys.reshape(B, h, w, H * W).permute(0, 3, 1, 2)
    if H >= h and W >= w:
        rows = F.interpolate(rows, size=(H, W), mode="nearest")
    else:
        rows = F.adaptive_avg_pool2d(rows, (H, W))
    return rows.permute(0, 2, 3, 1).reshape(B, H * W, H * W)


@pytest.mark.parametrize("src,dst", [(3, 7), (4, 8), (5, 3), (8, 2), (6, 6), (1, 4)])
@pytest.mark.parametrize("mode", ["linear", "area", "nearest"])
def test_resample_matrix_matches_ref(src, dst, mode):
    x = torch.randn(3, 1, src, dtype=torch.float64)
    if mode == "area":
        ref = F.adaptive_avg_pool1d(x, dst)
    elif mode == "linear":
        ref = F.interpolate(x, size=dst, mode="linear", align_corners=False)
    else:
        ref = F.interpolate(x, size=dst, mode="nearest")
    M = resample_matrix(src, dst, mode, dtype=torch.float64)
    assert M.shape == (dst, src)
    torch.testing.assert_close(x @ M.T, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(M.sum(-1), torch.ones(dst, dtype=torch.float64))


def test_resize_up_matches_hand_ref():
    # 2x2 -> 4x4: keys by the 1-D linear map L (half-pixel centres), renormalised; queries copied.
    L = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    P = _random_transition(1, 4)[0]
    ref = torch.empty(16, 16, dtype=torch.float64)
    for y in range(4):
        for x in range(4):
            src_row = (y // 2) * 2 + x // 2
            k = L @ P[src_row].reshape(2, 2) @ L.T  # sums to 4 * 1 (column sums of L are 2)
            ref[y * 4 + x] = (k / 4.0).flatten()
    out = resize_transition(P[None], (2, 2), (4, 4))[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)


def test_resize_down_matches_hand_ref():
    # 4x4 -> 2x2: keys summed over 2x2 cells (then renormalised); queries averaged over 2x2 cells.
    P = _random_transition(1, 16, seed=3)[0]
    ref = torch.zeros(4, 4, dtype=torch.float64)
    for Y in range(2):
        for X in range(2):
            for dy in range(2):
                for dx in range(2):
                    row = P[(2 * Y + dy) * 4 + 2 * X + dx].reshape(2, 2, 2, 2)  # (Ky, dy', Kx, dx')
                    ref[Y * 2 + X] += row.sum(dim=(1, 3)).flatten() / 4.0
    out = resize_transition(P[None], (4, 4), (2, 2))[0]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "src,dst", [((4, 6), (8, 12)), ((8, 8), (4, 4)), ((6, 4), (12, 8)), ((5, 7), (2, 3))]
)
def test_resize_matches_ref(src, dst):
    P = _random_transition(2, src[0] * src[1], seed=1)
    torch.testing.assert_close(resize_transition(P, src, dst), _resize_ref(P, src, dst), rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("src,dst", [((4, 4), (8, 8)), ((8, 8), (4, 4)), ((4, 8), (8, 4)), ((3, 5), (3, 5))])
def test_rows_stay_stochastic(dtype, src, dst):
    P = _random_transition(2, src[0] * src[1], dtype=dtype, seed=2)
    out = resize_transition(P, src, dst)
    assert out.dtype == torch.promote_types(dtype, torch.float32)
    assert out.shape == (2, dst[0] * dst[1], dst[0] * dst[1])
    assert (out >= 0).all()
    tol = 1e-6 if out.dtype == torch.float32 else 1e-12
    torch.testing.assert_close(out.sum(-1), torch.ones(2, dst[0] * dst[1], dtype=out.dtype), rtol=0, atol=tol)


def test_same_grid_is_a_copy():
    P = _random_transition(2, 12)
    out = resize_transition(P, (3, 4), (3, 4))
    torch.testing.assert_close(out, P, rtol=0, atol=1e-15)
    assert out.data_ptr() != P.data_ptr()


def test_aggregate_matches_ref():
    P16 = _random_transition(2, 16 * 16, seed=4)
    P8 = _random_transition(2, 8 * 8, seed=5)
    P4 = _random_transition(2, 4 * 4, seed=6)
    maps, grids, weights = [P16, P8, P4], [(16, 16), (8, 8), (4, 4)], [1.0, 2.0, 5.0]
    out = aggregate_attention(maps, grids, (8, 8), weights)
    ref = sum(w * _resize_ref(P, g, (8, 8)) for P, g, w in zip(maps, grids, weights)) / sum(weights)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(out.sum(-1), torch.ones(2, 64, dtype=torch.float64), rtol=0, atol=1e-12)
    # Equal weights by default; zero weights drop a map.
    torch.testing.assert_close(
        aggregate_attention(maps[:2], grids[:2], (8, 8)),
        aggregate_attention(maps[:2], grids[:2], (8, 8), [3, 3]),
    )
    torch.testing.assert_close(aggregate_attention(maps, grids, (8, 8), [0, 1, 0]), P8)


def test_exception():
    P = _random_transition(1, 16)
    with pytest.raises(ValueError, match="maps: expected at least one"):
        aggregate_attention([], [], (4, 4))
    with pytest.raises(ValueError, match="grids: expected one grid per map"):
        aggregate_attention([P], [], (4, 4))
    with pytest.raises(ValueError, match=r"maps\[0\]: expected a \(B, 9, 9\)"):
        aggregate_attention([P], [(3, 3)], (4, 4))
    with pytest.raises(ValueError, match="weights: expected non-negative"):
        aggregate_attention([P], [(4, 4)], (4, 4), [-1.0])
    with pytest.raises(ValueError, match="weights: expected one weight per map"):
        aggregate_attention([P], [(4, 4)], (4, 4), [1.0, 2.0])
    with pytest.raises(ValueError, match="target: expected a \\(h, w\\) pair"):
        aggregate_attention([P], [(4, 4)], (0, 4))
    with pytest.raises(ValueError, match="maps: expected one batch size"):
        aggregate_attention([P, _random_transition(2, 16)], [(4, 4), (4, 4)], (4, 4))
    with pytest.raises(ValueError, match="P: expected a floating point"):
        resize_transition(torch.ones(1, 4, 4, dtype=torch.long), (2, 2), (4, 4))
    with pytest.raises(ValueError, match="mode: expected"):
        resample_matrix(4, 2, "cubic")
