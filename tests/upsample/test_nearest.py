"""Feature-free upsampling: nearest token and bilinear majority vote."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffcut_gpu.eval.labels import resize_labels
from diffcut_gpu.upsample import majority_upsample, nearest_upsample
from diffcut_gpu.upsample.nearest import nearest_index


def random_labels(shape, values, seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.tensor(values)
    return values[torch.randint(len(values), shape, generator=g)]


@pytest.mark.parametrize("scale", [(1, 1), (3, 4), (2, 5)])
def test_nearest_exact_on_integer_scale(device, scale):
    labels = random_labels((2, 5, 7), [-1, 4, 9, 100], seed=0).to(device)
    out = nearest_upsample(labels, (5 * scale[0], 7 * scale[1]))
    expected = labels.repeat_interleave(scale[0], 1).repeat_interleave(scale[1], 2)
    assert out.dtype == torch.long and torch.equal(out, expected)


@pytest.mark.parametrize("size", [(13, 9), (4, 3), (31, 50)])
def test_nearest_matches_ref(device, size):
    labels = random_labels((2, 6, 7), [0, 1, 2, 3, 4], seed=1)
    ref = F.interpolate(labels.double().unsqueeze(1), size=size, mode="nearest-exact")[:, 0].long()
    assert torch.equal(nearest_upsample(labels.to(device), size).cpu(), ref)


@pytest.mark.parametrize("size", [(13, 9), (31, 50), (6, 7)])
def test_majority_matches_ref(device, size):
    labels = random_labels((2, 6, 7), [3, 5, 8], seed=2)
    ids = torch.searchsorted(torch.tensor([3, 5, 8]), labels)
    votes = F.interpolate(F.one_hot(ids, 3).permute(0, 3, 1, 2).double(), size=size, mode="bilinear")
    top = votes.topk(2, dim=1)
    ref = torch.tensor([3, 5, 8])[top.indices[:, 0]]
    out = majority_upsample(labels.to(device), size).cpu()
    diff = out != ref
    assert bool((top.values[:, 0] - top.values[:, 1])[diff].lt(1e-6).all())


def test_majority_equals_nearest_at_scale_two(device):
    """At scale 2 a pixel's own token carries weight 9/16 > 1/2, so the vote is the nearest token."""
    labels = random_labels((2, 6, 5), [0, 1, 2, 3], seed=3).to(device)
    assert torch.equal(majority_upsample(labels, (12, 10)), nearest_upsample(labels, (12, 10)))


def test_majority_smooths_staircase():
    """A diagonal boundary: the vote cuts token corners that nearest keeps as steps."""
    labels = torch.triu(torch.ones(4, 4, dtype=torch.long)).unsqueeze(0)
    near = nearest_upsample(labels, (16, 16))
    vote = majority_upsample(labels, (16, 16))
    assert not torch.equal(near, vote)
    assert set(vote.unique().tolist()) == {0, 1}


def test_exception():
    with pytest.raises(ValueError, match="labels: expected a non-empty integer tensor"):
        nearest_upsample(torch.zeros(3, 3, dtype=torch.long), (6, 6))
    with pytest.raises(ValueError, match="labels: expected an integer dtype"):
        majority_upsample(torch.zeros(1, 3, 3), (6, 6))
    with pytest.raises(ValueError, match="output_size: expected"):
        nearest_upsample(torch.zeros(1, 3, 3, dtype=torch.long), (6,))
    with pytest.raises(ValueError, match="max_elements: expected"):
        majority_upsample(torch.zeros(1, 3, 3, dtype=torch.long), (6, 6), max_elements=-1)


def nearest_ref(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Loop reference in exact rational arithmetic: output pixel i reads input floor((i + 1/2) * h / H)."""
    h, w = labels.shape
    rows = [math.floor((Fraction(i) + Fraction(1, 2)) * Fraction(h, size[0])) for i in range(size[0])]
    cols = [math.floor((Fraction(j) + Fraction(1, 2)) * Fraction(w, size[1])) for j in range(size[1])]
    return np.array([[labels[r, c] for c in cols] for r in rows])


@pytest.mark.parametrize(("src", "dst"), [((6, 6), (50, 70)), ((84, 84), (481, 321)), ((37, 23), (5, 300))])
def test_nearest_index_matches_exact_ref(src, dst):
    """The one nearest-exact map serves the token upsampling, ``resize_labels`` and the CLI label files."""
    labels = np.random.default_rng(0).integers(0, 1000, src).astype(np.uint16)
    ref = nearest_ref(labels, dst)
    got = resize_labels(labels, dst)  # what the CLI writes (uint16 on the host)
    assert got.dtype == np.uint16 and got.shape == dst
    np.testing.assert_array_equal(got, ref)
    up = nearest_upsample(torch.from_numpy(labels.astype(np.int64))[None], dst)[0].numpy()
    np.testing.assert_array_equal(up, ref)
    assert nearest_index(src[0], dst[0]).max() < src[0]
    torch_map = F.interpolate(torch.from_numpy(labels.astype(np.float64))[None, None], size=dst,
                              mode="nearest-exact")[0, 0].numpy()
    assert (got != torch_map).mean() < 0.01  # torch's float32 scale differs only on exact ties
