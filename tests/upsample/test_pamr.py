"""PAMR: pixel-adaptive mask refinement with dilated colour affinities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffcut_gpu.upsample import pamr, pamr_affinity, pamr_labels


def pamr_unfold(image, masks, dilations=(1, 2, 4, 8, 12, 24), iters=10, lam=0.1):
    """Frozen copy of the PAMR this package shipped before the shifted multiply-adds: every tap gathered
    with ``F.unfold`` into a (B, C, M, H, W) tensor, one einsum per step. The reference the fast path must
    reproduce (``benchmarks/bench_pamr.py`` times both)."""

    def taps_of(x):
        b, c, h, w = x.shape
        out = []
        for d in dilations:
            cols = F.unfold(F.pad(x, (d, d, d, d), mode="replicate"), kernel_size=3, dilation=d)
            out.append(cols.view(b, c, 9, h, w)[:, :, (0, 1, 2, 3, 5, 6, 7, 8)])
        return torch.cat(out, dim=2)

    img = image.to(torch.promote_types(image.dtype, torch.float32))
    taps = taps_of(img)
    sigma = torch.cat([img.unsqueeze(2), taps], dim=2).std(dim=2, correction=0)
    alpha = (-(taps - img.unsqueeze(2)).abs() / (lam * sigma.unsqueeze(2) + 1e-8)).mean(dim=1).softmax(dim=1)
    m = masks.to(torch.promote_types(masks.dtype, alpha.dtype))
    for _ in range(iters):
        m = torch.einsum("bkmhw,bmhw->bkhw", taps_of(m), alpha)
    return m


def pamr_labels_unfold(image, labels, **kw):
    """Hard labels through ``pamr_unfold`` (labels 0 .. K-1)."""
    masks = F.one_hot(labels, int(labels.max()) + 1).permute(0, 3, 1, 2).float()
    return pamr_unfold(image, masks, **kw).argmax(dim=1)


def pamr_ref(image, masks, dilations, iters, lam):
    """Float64 loops over pixels and neighbours, straight from the equations (border taps clamped)."""
    image, m = image.double(), masks.double()
    batch, channels, height, width = image.shape
    offsets = [
        (dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)
    ]

    def at(y, x):
        return min(max(y, 0), height - 1), min(max(x, 0), width - 1)

    weights = {}
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                centre = image[b, :, y, x]
                taps = [image[b, :, at(y + oy, x + ox)[0], at(y + oy, x + ox)[1]] for oy, ox in offsets]
                local = [centre.tolist()] + [t.tolist() for t in taps]
                sigma = []
                for c in range(channels):
                    mean = sum(v[c] for v in local) / len(local)
                    sigma.append(math.sqrt(sum((v[c] - mean) ** 2 for v in local) / len(local)))
                kernel = []
                for tap in local[1:]:
                    k = sum(-abs(local[0][c] - tap[c]) / (lam * sigma[c] + 1e-8) for c in range(channels))
                    kernel.append(k / channels)
                top = max(kernel)
                e = [math.exp(k - top) for k in kernel]
                weights[b, y, x] = [v / sum(e) for v in e]
    for _ in range(iters):
        new = torch.zeros_like(m)
        for (b, y, x), w in weights.items():
            for (oy, ox), a in zip(offsets, w):
                yy, xx = at(y + oy, x + ox)
                new[b, :, y, x] += a * m[b, :, yy, xx]
        m = new
    return m


def two_colour(height=24, width=24, seed=0):
    """A disc of one colour on another, with mild noise; returns (image (1, 3, H, W), truth (1, H, W))."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    truth = (((yy - height / 2) ** 2 + (xx - width / 2.5) ** 2) < (height / 3) ** 2).long()
    colours = torch.tensor([[0.9, 0.2, 0.1], [0.1, 0.3, 0.8]])
    image = colours[truth].permute(2, 0, 1) + 0.02 * torch.randn(3, height, width, generator=g)
    return image.unsqueeze(0), truth.unsqueeze(0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_ref(device, dtype):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64)
    image[:, :, :, :3] += 1.0  # an edge, so affinities are far from uniform
    masks = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64)
    out = pamr(image.to(device, dtype), masks.to(device, dtype), iters=3, dilations=(1, 2, 4), lam=0.3)
    ref = pamr_ref(image, masks, (1, 2, 4), iters=3, lam=0.3)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out.cpu().double(), ref, atol=tol, rtol=tol)


def blocky_image(b, h, w, seed):
    """Random piecewise-constant colours on a coarse grid, upsampled, with noise: edges like a photo."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // 8 + 1, w // 8 + 1, generator=g)
    image = F.interpolate(coarse, size=(h, w), mode="nearest")
    return (image + 0.05 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_unfold_implementation(seed):
    """Same output as the unfold + einsum implementation it replaced: probabilities within 1e-6, labels
    identical (default dilations up to 24, on images larger than them, and one smaller than them)."""
    for b, h, w, k in ((2, 40, 56, 4), (1, 20, 17, 3)):
        image = blocky_image(b, h, w, seed)
        g = torch.Generator().manual_seed(seed + 10)
        masks = torch.rand(b, k, h, w, generator=g).softmax(dim=1)
        fast, ref = pamr(image, masks), pamr_unfold(image, masks)
        torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
        labels = torch.randint(k, (b, h, w), generator=g)
        assert torch.equal(pamr_labels(image, labels), pamr_labels_unfold(image, labels))


def test_affinity_rows_stochastic(device):
    image = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(1)).to(device)
    alpha = pamr_affinity(image, dilations=(1, 3))
    assert alpha.shape == (2, 16, 9, 11)
    assert bool((alpha >= 0).all())
    torch.testing.assert_close(alpha.sum(1), torch.ones(2, 9, 11, device=device))


def test_constant_mask_stays_constant(device):
    image = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    level = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64).view(1, 3, 1, 1)
    masks = level.expand(2, 3, 16, 20).contiguous()
    out = pamr(image.to(device), masks.to(device))
    torch.testing.assert_close(out.cpu(), masks, atol=1e-12, rtol=1e-12)


def test_aligned_mask_is_fixed_point(device):
    image, truth = two_colour()
    masks = torch.nn.functional.one_hot(truth, 2).permute(0, 3, 1, 2).float()
    out = pamr(image.to(device), masks.to(device))
    torch.testing.assert_close(out.cpu(), masks, atol=1e-3, rtol=0)
    assert torch.equal(pamr_labels(image.to(device), truth.to(device) + 5).cpu(), truth + 5)


def test_reduces_error_on_noisy_mask(device):
    image, truth = two_colour(32, 32, seed=3)
    flip = torch.rand(truth.shape, generator=torch.Generator().manual_seed(4)) < 0.2
    noisy = torch.where(flip, 1 - truth, truth)
    refined = pamr_labels(image.to(device), noisy.to(device)).cpu()
    before = (noisy != truth).float().mean()
    after = (refined != truth).float().mean()
    assert before > 0.15 and after < 0.25 * before


def test_chunking_invariant(device):
    image = torch.rand(1, 3, 10, 12, generator=torch.Generator().manual_seed(5)).to(device)
    masks = torch.rand(1, 5, 10, 12, generator=torch.Generator().manual_seed(6)).to(device)
    full = pamr(image, masks, iters=4, dilations=(1, 2))
    torch.testing.assert_close(pamr(image, masks, iters=4, dilations=(1, 2), max_elements=1), full)


def test_labels_values_kept(device):
    image = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7)).to(device)
    labels = torch.tensor([-3, 4, 11])[
        torch.randint(3, (2, 8, 8), generator=torch.Generator().manual_seed(8))
    ]
    labels[1] = labels[1].clamp(min=4)  # image 1 has no -3
    out = pamr_labels(image, labels.to(device), iters=2).cpu()
    assert out.dtype == torch.long
    assert set(out[0].unique().tolist()) <= {-3, 4, 11}
    assert set(out[1].unique().tolist()) <= {4, 11}


def test_zero_iters_is_identity():
    image = torch.rand(1, 3, 5, 5)
    masks = torch.rand(1, 2, 5, 5)
    out = pamr(image, masks, iters=0)
    assert torch.equal(out, masks) and out is not masks


def test_exception():
    image = torch.rand(1, 3, 6, 6)
    masks = torch.rand(1, 2, 6, 6)
    with pytest.raises(ValueError, match="image: expected a float tensor"):
        pamr(torch.zeros(1, 3, 6, 6, dtype=torch.uint8), masks)
    with pytest.raises(ValueError, match="image: expected a float tensor"):
        pamr(torch.rand(3, 6, 6), masks)
    with pytest.raises(ValueError, match="masks: expected a float tensor"):
        pamr(image, masks.long())
    with pytest.raises(ValueError, match=r"masks: expected \(B, K, H, W\)"):
        pamr(image, torch.rand(1, 2, 6, 5))
    with pytest.raises(ValueError, match="dilations: expected"):
        pamr(image, masks, dilations=(1, 0))
    with pytest.raises(ValueError, match="dilations: expected"):
        pamr(image, masks, dilations=())
    with pytest.raises(ValueError, match="iters: expected"):
        pamr(image, masks, iters=-1)
    with pytest.raises(ValueError, match="lam: expected"):
        pamr(image, masks, lam=0.0)
    with pytest.raises(ValueError, match="max_elements: expected"):
        pamr(image, masks, max_elements=0)
    with pytest.raises(ValueError, match=r"labels: expected \(B, H, W\)"):
        pamr_labels(image, torch.zeros(1, 6, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels: expected an integer dtype"):
        pamr_labels(image, torch.zeros(1, 6, 6))
