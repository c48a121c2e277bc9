"""Tests for diffcut_gpu.eval.bsds_metrics (segmentation covering, PRI, VI)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from diffcut_gpu.eval import BSDSMetrics, bsds_scores, contingency_table, scores_from_contingency

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LN = math.log


def _ref_pair(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Float64 brute force: covering from region masks, RI over all pixel pairs, VI from entropies."""
    p, g = pred.ravel(), gt.ravel()
    n = p.size
    cover = 0.0
    for r in np.unique(g):
        mr = g == r
        cover += mr.sum() * max((mr & (p == s)).sum() / (mr | (p == s)).sum() for s in np.unique(p))
    agree = sum((p[i] == p[j]) == (g[i] == g[j]) for i, j in itertools.combinations(range(n), 2))

    def entropy(x):
        _, c = np.unique(x, return_counts=True, axis=0)
        q = c / n
        return float(-(q * np.log(q)).sum())

    h_p, h_g, h_pg = entropy(p), entropy(g), entropy(np.stack([p, g], 1))
    mutual = h_p + h_g - h_pg
    return {"covering": cover / n, "ri": agree / (n * (n - 1) / 2), "vi": h_p + h_g - 2 * mutual}


def _ref_scores(pred, gts):
    per = [_ref_pair(np.asarray(pred), np.asarray(g)) for g in gts]
    return {"covering": np.mean([s["covering"] for s in per]), "pri": np.mean([s["ri"] for s in per]),
            "vi": np.mean([s["vi"] for s in per])}


def _assert_close(out, ref, tol=1e-12):
    for key, val in ref.items():
        assert math.isclose(out[key], val, rel_tol=0, abs_tol=tol), (key, out[key], val)


class TestBSDSScores:
    def test_smoke(self):
        gt = torch.tensor([[1, 1, 2], [3, 3, 2]])
        out = bsds_scores(gt * 10 - 4, [gt, gt])                              # same partition, other ids
        assert out == pytest.approx({"covering": 1.0, "pri": 1.0, "vi": 0.0}, abs=1e-15)

    def test_hand_2x2(self):
        # gt [[1,1],[2,2]] (regions R1 = top, R2 = bottom), pred [[0,0],[0,1]] (S0 = 3 px, S1 = 1 px).
        # covering: R1 best IoU 2/3 (S0), R2 best 1/2 (S1) -> (2*2/3 + 2*1/2)/4 = 7/12.
        # RI: of the 6 pairs, (a,b), (a,d), (b,d) agree -> 1/2.
        # VI = 2H(G,S) - H(G) - H(S) = 3 ln2 - ln2 - (2 ln2 - 3/4 ln3) = 3/4 ln3.
        out = bsds_scores(torch.tensor([[0, 0], [0, 1]]), [torch.tensor([[1, 1], [2, 2]])])
        assert out["covering"] == pytest.approx(7 / 12, abs=1e-15)
        assert out["pri"] == pytest.approx(0.5, abs=1e-15)
        assert out["vi"] == pytest.approx(0.75 * LN(3), abs=1e-15)

    def test_all_one_segment(self):
        # 3x3 annotator A with regions of 4, 3, 2 pixels; annotator B marks one region.
        # vs A: covering sum |R|^2 / N^2 = 29/81; RI = same-region pairs (6+3+1) / 36 = 5/18;
        #       VI = H(A) = -(4/9 ln 4/9 + 3/9 ln 3/9 + 2/9 ln 2/9).  vs B: 1, 1, 0.
        gt_a = np.array([[1, 1, 2], [1, 1, 2], [3, 3, 2]])
        gt_b = np.ones((3, 3), dtype=np.int64)
        h_a = -sum(k / 9 * LN(k / 9) for k in (4, 3, 2))
        out = bsds_scores(np.zeros((3, 3), dtype=np.int64), [gt_a, gt_b])
        assert out["covering"] == pytest.approx((29 / 81 + 1) / 2, abs=1e-15)
        assert out["pri"] == pytest.approx((5 / 18 + 1) / 2, abs=1e-15)
        assert out["vi"] == pytest.approx(h_a / 2, abs=1e-15)

    def test_covering_direction(self):
        # Truth [[1,1,1,2]], prediction one segment. Truth covered by prediction (the BSDS direction):
        # (3 * 3/4 + 1 * 1/4) / 4 = 5/8. The reverse direction would give 4 * 3/4 / 4 = 3/4.
        out = bsds_scores(np.zeros((1, 4), np.int64), [np.array([[1, 1, 1, 2]])])
        assert out["covering"] == pytest.approx(5 / 8, abs=1e-15)

    @pytest.mark.parametrize("seed", [0, 1, 2, 3])
    def test_matches_ref(self, seed):
        gen = np.random.default_rng(seed)
        h, w = 6, 7
        pred = gen.integers(-3, 5, (h, w))
        gts = [gen.integers(1, 2 + k, (h, w)) for k in range(3)]              # annotators with 2, 3, 4 labels
        _assert_close(bsds_scores(pred, gts), _ref_scores(pred, gts))

    def test_perfect_and_permutation_invariance(self):
        gen = torch.Generator().manual_seed(0)
        gt = torch.randint(1, 9, (12, 10), generator=gen)
        pred = torch.randint(0, 6, (12, 10), generator=gen)
        perm = torch.randperm(100, generator=gen)
        _assert_close(bsds_scores(perm[gt], [gt]), {"covering": 1.0, "pri": 1.0, "vi": 0.0})
        gts = [gt, torch.randint(1, 4, (12, 10), generator=gen)]
        _assert_close(bsds_scores(perm[pred] * 3 - 50, gts), bsds_scores(pred, gts))

    def test_torch_and_numpy_inputs(self):
        gen = np.random.default_rng(5)
        pred = gen.integers(0, 6, (5, 8))
        gts = [gen.integers(1, 4, (5, 8)), gen.integers(1, 6, (5, 8))]
        ref = bsds_scores(pred, gts)
        _assert_close(bsds_scores(torch.from_numpy(pred), [torch.from_numpy(g) for g in gts]), ref, tol=0)
        mixed = [gts[0].astype(np.uint16), torch.from_numpy(gts[1])]
        _assert_close(bsds_scores(pred.astype(np.uint8), mixed), ref, tol=0)
        _assert_close(bsds_scores(pred, np.stack(gts)), ref, tol=0)             # (K, H, W) array

    @pytest.mark.parametrize("device", DEVICES)
    def test_contingency_table(self, device):
        gen = np.random.default_rng(1)
        a, b = gen.integers(3, 8, (4, 9)), gen.integers(-2, 2, (4, 9))
        table = contingency_table(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device))
        assert table.device.type == device and table.dtype == torch.int64
        ua, ub = np.unique(a), np.unique(b)
        ref = np.array([[((a == i) & (b == j)).sum() for j in ub] for i in ua])
        np.testing.assert_array_equal(table.cpu().numpy(), ref)
        _assert_close(scores_from_contingency(table), _ref_pair(b, a))                 # rows = truth

    def test_exception(self):
        gt = np.ones((3, 3), np.int64)
        with pytest.raises(ValueError, match=r"gts\[0\]: expected the shape of pred"):
            bsds_scores(np.ones((3, 4), np.int64), [gt])
        with pytest.raises(ValueError, match="pred: expected an integer label array"):
            bsds_scores(np.ones((3, 3)), [gt])
        with pytest.raises(ValueError, match=r"gts\[1\]: expected an integer label tensor"):
            bsds_scores(gt, [gt, torch.ones(3, 3)])
        with pytest.raises(ValueError, match="gts: expected a non-empty list"):
            bsds_scores(gt, [])
        with pytest.raises(ValueError, match="pred: expected a non-empty label map"):
            bsds_scores(np.ones((0, 3), np.int64), [np.ones((0, 3), np.int64)])
        with pytest.raises(ValueError, match=r"pred: expected one \(H, W\) label map"):
            bsds_scores(gt[None], [gt])
        with pytest.raises(ValueError, match="table: expected a non-empty"):
            scores_from_contingency(np.zeros((0, 2), np.int64))
        with pytest.raises(RuntimeError, match="call update"):
            BSDSMetrics().compute()


class TestBSDSMetrics:
    def test_mean_over_images(self):
        gen = np.random.default_rng(7)
        images = [(gen.integers(0, 4, (4, 5)), [gen.integers(1, 4, (4, 5)) for _ in range(2)]),
                  (gen.integers(0, 3, (6, 3)), [gen.integers(1, 3, (6, 3)) for _ in range(3)])]
        metric = BSDSMetrics()
        per = [metric.update(p, g) for p, g in images]
        out = metric.compute()
        for key in ("covering", "pri", "vi"):
            assert out[key] == pytest.approx(np.mean([_ref_scores(p, g)[key] for p, g in images]), abs=1e-12)
        pooled = (per[0]["covering"] * 20 + per[1]["covering"] * 18) / 38     # 4x5 and 6x3 pixels
        assert out["covering_pooled"] == pytest.approx(pooled, abs=1e-15)
        assert out["num_images"] == 2
        metric.reset()
        metric.update(images[0][1][0], images[0][1][:1])
        assert metric.compute()["covering"] == 1.0 and metric.compute()["num_images"] == 1
