"""upsample_labels: the front door dispatching to concept / nearest / majority, optionally PAMR."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.upsample import (
    concept_assignment,
    majority_upsample,
    nearest_upsample,
    pamr_labels,
    upsample_labels,
)


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([2, 9, 30])[torch.randint(3, (2, 4, 5), generator=g)]
    labels[1][labels[1] == 30] = 9  # image 1 holds only {2, 9}
    features = torch.randn(2, 20, 6, generator=g)
    image = torch.rand(2, 3, 12, 15, generator=g)
    return labels, features, image


def test_smoke(device, case):
    labels, features, image = (t.to(device) for t in case)
    for mode in ("concept", "nearest", "majority"):
        for refine in (False, True):
            out = upsample_labels(labels, (12, 15), mode=mode, features=features, image=image, refine=refine)
            assert out.shape == (2, 12, 15) and out.dtype == torch.long and out.device == labels.device
            for b in range(2):
                assert set(out[b].unique().tolist()) <= set(labels[b].unique().tolist())


def test_matches_parts(case):
    labels, features, image = case
    size = (12, 15)
    assert torch.equal(
        upsample_labels(labels, size, features=features), concept_assignment(labels, features, size)
    )
    assert torch.equal(upsample_labels(labels, size, mode="nearest"), nearest_upsample(labels, size))
    assert torch.equal(upsample_labels(labels, size, mode="majority"), majority_upsample(labels, size))
    base = nearest_upsample(labels, size)
    refined = upsample_labels(labels, size, mode="nearest", image=image, refine=True, pamr_iters=3)
    assert torch.equal(refined, pamr_labels(image, base, iters=3))
    assert not torch.equal(refined, base)  # the random image does move some boundaries


def test_exception(case):
    labels, features, image = case
    with pytest.raises(ValueError, match="mode: expected one of"):
        upsample_labels(labels, (12, 15), mode="bicubic")
    with pytest.raises(ValueError, match=r"features: expected .* for mode='concept', got None"):
        upsample_labels(labels, (12, 15))
    with pytest.raises(ValueError, match=r"features: expected shape \(2, 20, C\)"):
        upsample_labels(labels, (12, 15), features=features[:, :19])
    with pytest.raises(ValueError, match=r"image: expected .* for refine=True, got None"):
        upsample_labels(labels, (12, 15), mode="nearest", refine=True)
    with pytest.raises(ValueError, match="to match output_size"):
        upsample_labels(labels, (12, 16), mode="nearest", image=image, refine=True)
    with pytest.raises(ValueError, match="image: expected batch 2"):
        upsample_labels(labels, (12, 15), mode="nearest", image=image[:1], refine=True)
    with pytest.raises(ValueError, match="pamr_iters: expected"):
        upsample_labels(labels, (12, 15), mode="nearest", image=image, refine=True, pamr_iters=-1)
    with pytest.raises(ValueError, match="output_size: expected"):
        upsample_labels(labels, (12, 0), mode="nearest")
    with pytest.raises(ValueError, match="labels: expected an integer dtype"):
        upsample_labels(labels.float(), (12, 15), mode="nearest")
