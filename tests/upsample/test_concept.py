"""Concept assignment: token labels + features -> pixel labels by cosine to segment means."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffcut_gpu.upsample import concept_assignment, segment_concepts


def concept_ref(labels, features, size):
    """Float64 loops over images and segments: upsample the unit features, argmax cosine per pixel.

    Returns (labels (B, H, W), top-2 score gap (B, H, W)) so near-ties can be told apart.
    """
    batch, h, w = labels.shape
    out = torch.empty(batch, *size, dtype=torch.long)
    gap = torch.empty(batch, *size, dtype=torch.float64)
    for b in range(batch):
        f = features[b].double()
        f = f / f.norm(dim=-1, keepdim=True)
        fmap = f.T.reshape(1, -1, h, w)
        up = F.interpolate(fmap, size=size, mode="bilinear", align_corners=False)[0]  # (C, H, W)
        up = up / up.norm(dim=0, keepdim=True)
        segs = labels[b].flatten().unique().tolist()
        scores = []
        for s in segs:
            mean = f[labels[b].flatten() == s].mean(0)
            scores.append(torch.einsum("chw,c->hw", up, mean / mean.norm()))
        scores = torch.stack(scores)
        top = scores.topk(min(2, len(segs)), dim=0)
        out[b] = torch.tensor(segs)[top.indices[0]]
        gap[b] = top.values[0] - top.values[1] if len(segs) > 1 else torch.inf
    return out, gap


def random_case(batch, h, w, channels, values, seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor(sorted(values))
    labels = values[torch.randint(len(values), (batch, h, w), generator=g)]
    # smooth-ish features: a per-label direction plus noise, so segments mean something
    directions = torch.randn(len(values), channels, generator=g, dtype=torch.float64)
    index = torch.searchsorted(values, labels.flatten(1))
    features = directions[index] + 0.8 * torch.randn(batch, h * w, channels, generator=g, dtype=torch.float64)
    return labels, features


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("grid", "size"), [((6, 7), (17, 23)), ((5, 5), (20, 20)), ((8, 4), (8, 4))])
def test_matches_ref(device, dtype, grid, size):
    labels, features = random_case(3, *grid, 8, values=[-2, 3, 10, 42, 7], seed=grid[0] * 100 + size[0])
    labels[1][labels[1] == 42] = 3  # one image lacks a label the others have
    out = concept_assignment(labels.to(device), features.to(device, dtype), size)
    ref, gap = concept_ref(labels, features, size)
    assert out.shape == (3, *size) and out.dtype == torch.long
    diff = out.cpu() != ref
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    assert bool((gap[diff] < tol).all()), f"{int(diff.sum())} pixels differ away from ties"
    assert diff.float().mean() < 0.01


def test_segment_concepts_matches_ref():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, (2, 30), generator=g)
    ids[1][ids[1] == 2] = 0
    feats = torch.randn(2, 30, 5, generator=g, dtype=torch.float64)
    concepts, counts = segment_concepts(ids, feats, 5)
    for b in range(2):
        for k in range(5):
            members = feats[b][ids[b] == k]
            assert counts[b, k] == len(members)
            if len(members) == 0:
                assert bool((concepts[b, k] == 0).all())
            else:
                mean = (members / members.norm(dim=-1, keepdim=True)).mean(0)
                torch.testing.assert_close(concepts[b, k], mean / mean.norm())


def test_planted_regions(device):
    """A grid of rectangular regions with orthogonal features (any per-token scale) comes back exactly.

    Along a straight boundary a pixel's own side weighs >= 5/8; where four regions meet its own token
    weighs 25/64 against at most 15/64 for each other region, so the argmax is the region of the pixel.
    """
    g = torch.Generator().manual_seed(3)
    row_block = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    col_block = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
    regions = row_block[:, None] * 3 + col_block[None, :]  # 9 rectangles on an 8 x 8 grid
    basis = torch.linalg.qr(torch.randn(16, 9, generator=g, dtype=torch.float64))[0].T  # 9 orthonormal rows
    scale = 0.5 + torch.rand(64, 1, generator=g, dtype=torch.float64)
    features = (basis[regions.flatten()] * scale).unsqueeze(0).float()
    out = concept_assignment((regions + 10).unsqueeze(0).to(device), features.to(device), (32, 32))
    expected = regions.repeat_interleave(4, 0).repeat_interleave(4, 1) + 10
    assert torch.equal(out[0].cpu(), expected)


def test_absent_labels_never_win(device):
    """An absent label has a zero concept (score 0); it must lose even where all present scores are < 0."""
    labels = torch.tensor([[[0, 1], [0, 1]], [[7, 7], [7, 7]]])
    features = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]],
            [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [-1.0, 0.1]],  # last token points against its mean
        ]
    )
    out = concept_assignment(labels.to(device), features.to(device), (8, 8)).cpu()
    assert set(out[0].unique().tolist()) == {0, 1}
    assert bool((out[1] == 7).all())


def test_chunking_invariant(device):
    labels, features = random_case(2, 6, 5, 4, values=[0, 1, 2, 3], seed=9)
    full = concept_assignment(labels.to(device), features.to(device), (25, 19))
    for max_elements in (1, 200, 5000):
        chunked = concept_assignment(
            labels.to(device), features.to(device), (25, 19), max_elements=max_elements
        )
        assert torch.equal(full, chunked)


def test_exception():
    labels = torch.zeros(1, 2, 3, dtype=torch.long)
    feats = torch.rand(1, 6, 4)
    with pytest.raises(ValueError, match="labels: expected a non-empty integer tensor"):
        concept_assignment(torch.zeros(2, 3, dtype=torch.long), feats, (4, 6))
    with pytest.raises(ValueError, match="labels: expected an integer dtype"):
        concept_assignment(labels.float(), feats, (4, 6))
    with pytest.raises(ValueError, match=r"features: expected shape \(1, 6, C\)"):
        concept_assignment(labels, torch.rand(1, 5, 4), (4, 6))
    with pytest.raises(ValueError, match="features: expected a float tensor"):
        concept_assignment(labels, torch.ones(1, 6, 4, dtype=torch.long), (4, 6))
    with pytest.raises(ValueError, match="features: expected a float tensor"):
        concept_assignment(labels, None, (4, 6))
    with pytest.raises(ValueError, match="output_size: expected"):
        concept_assignment(labels, feats, (0, 6))
    with pytest.raises(ValueError, match="max_elements: expected"):
        concept_assignment(labels, feats, (4, 6), max_elements=0)
