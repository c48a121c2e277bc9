"""Tests for diffcut_gpu.eval.metrics (Hungarian / many-to-one mIoU) and eval.labels.resize_labels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffcut_gpu.eval import HungarianMIoU, confusion_matrices, hungarian_miou, match_segments, resize_labels

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _ref_scores(preds, gts, num_classes, ignore_index=255, many_to_one=False):
    """Float64 brute force: masks per (segment, class), exhaustive matching search, pixel relabelling."""
    tp = np.zeros(num_classes)
    fp = np.zeros(num_classes)
    fn = np.zeros(num_classes)
    n_valid = 0
    for pred, gt in zip(preds, gts):
        pred, gt = np.asarray(pred), np.asarray(gt)
        valid = gt != ignore_index
        segs = np.unique(pred[valid])
        classes = [c for c in range(num_classes) if (valid & (gt == c)).any()]
        inter = {(s, c): float(((pred == s) & (gt == c) & valid).sum()) for s in segs for c in classes}
        iou = {(s, c): inter[s, c] / float((((pred == s) | (gt == c)) & valid).sum()) for s in segs
               for c in classes}
        if many_to_one:
            best = {s: max(classes, key=lambda c, s=s: (inter[s, c], -c)) for s in segs}
        else:
            best, best_val = {}, -1.0
            # every injective map from a subset of segments to classes: permutations of classes + "none"
            slots = classes + [None] * len(segs)
            for perm in set(itertools.permutations(slots, len(segs))):
                val = sum(iou[s, c] for s, c in zip(segs, perm) if c is not None)
                if val > best_val + 1e-12:
                    best_val, best = val, {s: c for s, c in zip(segs, perm) if c is not None}
            best = {s: c for s, c in best.items() if inter[s, c] > 0}
        out = np.full(pred.shape, -1)
        for s, c in best.items():
            out[pred == s] = c
        for c in range(num_classes):
            tp[c] += ((out == c) & (gt == c) & valid).sum()
            fp[c] += ((out == c) & (gt != c) & valid).sum()
            fn[c] += ((out != c) & (gt == c) & valid).sum()
        n_valid += valid.sum()
    denom = tp + fp + fn
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    return {"mIoU": float(np.nanmean(iou)), "pixel_accuracy": float(tp.sum() / n_valid), "per_class_iou": iou}


def _random_maps(gen, b, h, w, n_seg, n_cls, p_ignore=0.1):
    pred = torch.randint(0, n_seg, (b, h, w), generator=gen) * 7 - 5          # arbitrary, negative ids too
    gt = torch.randint(0, n_cls, (b, h, w), generator=gen)
    gt[torch.rand(b, h, w, generator=gen) < p_ignore] = 255
    return pred, gt


def _assert_scores_equal(a, b, tol=1e-12):
    assert math.isclose(a["mIoU"], b["mIoU"], rel_tol=0, abs_tol=tol)
    assert math.isclose(a["pixel_accuracy"], b["pixel_accuracy"], rel_tol=0, abs_tol=tol)
    np.testing.assert_allclose(np.asarray(a["per_class_iou"], float), np.asarray(b["per_class_iou"], float),
                               rtol=0, atol=tol)


class TestHungarianMIoU:
    def test_smoke(self):
        gt = torch.tensor([[0, 0, 1], [2, 2, 1]])
        pred = torch.tensor([[9, 9, 4], [-3, -3, 4]])                            # same partition, other ids
        out = hungarian_miou(pred, gt, 3)
        assert out["mIoU"] == 1.0 and out["pixel_accuracy"] == 1.0
        assert out["per_class_iou"] == [1.0, 1.0, 1.0]

    def test_hand_2x2(self):
        # gt [[0,0],[1,1]], pred [[5,5],[5,7]]: M = seg5:(2,1), seg7:(0,1).
        # IoU: 5-0 2/3, 5-1 1/4, 7-1 1/2 -> matching {5:0, 7:1} (7/6 > 1/4).
        # class 0: TP 2, FP 1, FN 0 -> 2/3; class 1: TP 1, FP 0, FN 1 -> 1/2. mIoU 7/12, acc 3/4.
        out = hungarian_miou(torch.tensor([[5, 5], [5, 7]]), torch.tensor([[0, 0], [1, 1]]), 2)
        assert out["per_class_iou"] == pytest.approx([2 / 3, 1 / 2], abs=1e-15)
        assert out["mIoU"] == pytest.approx(7 / 12, abs=1e-15)
        assert out["pixel_accuracy"] == 0.75

    def test_all_one_segment(self):
        # 3x3 gt with class sizes 4, 3, 2; one predicted segment. Its IoU with class c is |c|/9, so it
        # matches class 0: TP0 4, FP0 5 -> 4/9; classes 1, 2 get only FN -> 0. mIoU 4/27, acc 4/9.
        gt = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 1]])
        pred = torch.zeros(3, 3, dtype=torch.long)
        for many in (False, True):                                              # majority class is also 0
            out = hungarian_miou(pred, gt, 3, many_to_one=many)
            assert out["per_class_iou"] == pytest.approx([4 / 9, 0.0, 0.0], abs=1e-15)
            assert out["mIoU"] == pytest.approx(4 / 27, abs=1e-15)
            assert out["pixel_accuracy"] == pytest.approx(4 / 9, abs=1e-15)

    def test_maximises_iou_not_overlap(self):
        # Segments A = (c0 5, c1 4, c2 0), B = (c0 100, c1 0, c2 200); class sizes 105, 4, 200.
        # Pixel overlap would pick {A:0, B:2} (205 > 204); IoU picks {A:1, B:2}: 4/9 + 2/3 > 5/109 + 2/3.
        # Then c0: FN 105 -> 0; c1: TP 4, FP 5 -> 4/9; c2: TP 200, FP 100 -> 2/3. mIoU 10/27, acc 204/309.
        pred = np.repeat([0, 0, 0, 1, 1], [5, 4, 0, 100, 200])[None]
        gt = np.repeat([0, 1, 2, 0, 2], [5, 4, 0, 100, 200])[None]
        out = hungarian_miou(pred, gt, 3)
        assert out["per_class_iou"] == pytest.approx([0.0, 4 / 9, 2 / 3], abs=1e-15)
        assert out["mIoU"] == pytest.approx(10 / 27, abs=1e-15)
        assert out["pixel_accuracy"] == pytest.approx(204 / 309, abs=1e-15)
        assert match_segments(np.array([[5, 4, 0], [100, 0, 200]])).tolist() == [1, 2]

    def test_many_to_one(self):
        # gt [[0,0],[1,1]], pred [[3,4],[5,5]]: many-to-one sends 3, 4 -> 0 and 5 -> 1: perfect.
        # Hungarian keeps one of 3/4 for class 0 (IoU 1/2 each) and drops the other:
        # class 0: TP 1, FN 1 -> 1/2; class 1 -> 1. mIoU 3/4, acc 3/4.
        pred, gt = torch.tensor([[3, 4], [5, 5]]), torch.tensor([[0, 0], [1, 1]])
        m2o = hungarian_miou(pred, gt, 2, many_to_one=True)
        assert m2o["mIoU"] == 1.0 and m2o["pixel_accuracy"] == 1.0
        hun = hungarian_miou(pred, gt, 2)
        assert hun["per_class_iou"] == [0.5, 1.0]
        assert hun["pixel_accuracy"] == 0.75

    def test_unmatched_segment_is_false_negative_only(self):
        # gt [[0,0,0,1]], pred [[1,2,2,3]]: 3 segments, 2 classes. IoU 2-0 2/3, 1-0 1/3, 3-1 1.
        # Hungarian {2:0, 3:1}; segment 1 unmatched: its pixel is FN of class 0 and FP of nothing.
        # class 0: TP 2, FP 0, FN 1 -> 2/3; class 1 -> 1.
        out = hungarian_miou(np.array([[1, 2, 2, 3]]), np.array([[0, 0, 0, 1]]), 2)
        assert out["per_class_iou"] == pytest.approx([2 / 3, 1.0], abs=1e-15)
        assert out["pixel_accuracy"] == 0.75

    def test_zero_overlap_pair_not_kept(self):
        # Image 1: gt 0 x 11, 1, 2; segment A = first pixel, B = the other 12. IoU A0 1/11, B0 10/13,
        # B1 = B2 = 1/12, so the optimum is B -> 0 and A left with a zero-overlap class, which is dropped:
        # c0 TP 10, FP 2, FN 1; c1, c2 FN 1 each. Image 2 is perfect on 0, 1, 2 (TP 1 each).
        # Totals: c0 11/14, c1 1/2, c2 1/2 (keeping A -> c1 or c2 would make one of them 1/3).
        metric = HungarianMIoU(3)
        metric.update(np.array([[7] + [8] * 12]), np.array([[0] * 11 + [1, 2]]))
        metric.update(np.array([[0, 1, 2]]), np.array([[0, 1, 2]]))
        out = metric.compute()
        assert out["per_class_iou"] == pytest.approx([11 / 14, 1 / 2, 1 / 2], abs=1e-15)
        assert out["mIoU"] == pytest.approx(25 / 42, abs=1e-15)
        assert out["pixel_accuracy"] == pytest.approx(13 / 16, abs=1e-15)

    def test_ignore_index(self):
        # Valid pixels: (0,0) pred 2 / gt 0, row 1 pred 3 / gt 1 -> perfect. Segment 9 lies only on the
        # ignored pixel and does not exist; segment 2 covering an ignored pixel costs nothing.
        gt = torch.tensor([[0, 255], [1, 1]])
        assert hungarian_miou(torch.tensor([[2, 2], [3, 3]]), gt, 2)["mIoU"] == 1.0
        assert hungarian_miou(torch.tensor([[2, 9], [3, 3]]), gt, 2)["mIoU"] == 1.0
        # Another ignore id; without the ignore, pixel (0,1) would be a class-0 FP.
        gt7 = torch.tensor([[0, 7], [1, 1]])
        assert hungarian_miou(torch.tensor([[2, 2], [3, 3]]), gt7, 2, ignore_index=7)["mIoU"] == 1.0
        pred = torch.tensor([[2, 2], [3, 3]])
        out = hungarian_miou(pred, torch.tensor([[0, 1], [1, 1]]), 2, ignore_index=None)
        assert out["per_class_iou"] == pytest.approx([1 / 2, 2 / 3], abs=1e-15)

    def test_absent_class_is_nan_and_left_out(self):
        out = hungarian_miou(torch.tensor([[1, 1], [2, 2]]), torch.tensor([[0, 0], [2, 2]]), 4)
        assert out["per_class_iou"][0] == 1.0 and out["per_class_iou"][2] == 1.0
        assert math.isnan(out["per_class_iou"][1]) and math.isnan(out["per_class_iou"][3])
        assert out["mIoU"] == 1.0

    def test_permutation_invariance(self):
        gen = torch.Generator().manual_seed(1)
        pred, gt = _random_maps(gen, 2, 9, 7, 5, 4)
        ids, inv = torch.unique(pred, return_inverse=True)
        relabeled = (torch.randperm(ids.numel(), generator=gen) * 13 + 1000)[inv]
        for many in (False, True):
            _assert_scores_equal(hungarian_miou(pred, gt, 4, many_to_one=many),
                                 hungarian_miou(relabeled, gt, 4, many_to_one=many), tol=0)

    @pytest.mark.parametrize("many_to_one", [False, True])
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_ref(self, seed, many_to_one):
        gen = torch.Generator().manual_seed(seed)
        pred, gt = _random_maps(gen, 3, 6, 5, 4, 3)
        out = hungarian_miou(pred, gt, 3, many_to_one=many_to_one)
        _assert_scores_equal(out, _ref_scores(pred.numpy(), gt.numpy(), 3, many_to_one=many_to_one))

    @pytest.mark.parametrize("many_to_one", [False, True])
    def test_batch_equals_per_image(self, many_to_one):
        gen = torch.Generator().manual_seed(3)
        pred, gt = _random_maps(gen, 4, 10, 8, 6, 5)
        pred[1] += 2**40                                                        # spread ids across images
        batched, single = HungarianMIoU(5, many_to_one=many_to_one), HungarianMIoU(5, many_to_one=many_to_one)
        batched.update(pred, gt)
        for b in range(pred.shape[0]):
            single.update(pred[b], gt[b])
        for name in ("tp", "fp", "fn"):
            np.testing.assert_array_equal(getattr(batched, name), getattr(single, name))
        assert batched.num_valid == single.num_valid == int((gt != 255).sum())
        assert batched.num_images == single.num_images == 4
        _assert_scores_equal(batched.compute(), single.compute(), tol=0)

    def test_extreme_ids(self):
        # ids spread over almost all of int64 cannot be packed with the image index: pairwise-unique path
        gen = torch.Generator().manual_seed(6)
        pred, gt = _random_maps(gen, 3, 5, 5, 4, 3)
        ids = torch.tensor([-(2**62), -1, 3, 2**62])
        extreme = ids[torch.unique(pred, return_inverse=True)[1]]
        _assert_scores_equal(hungarian_miou(extreme, gt, 3), hungarian_miou(pred, gt, 3), tol=0)
        confs = confusion_matrices(extreme, gt, 3)
        expected = [int(torch.unique(p[g != 255]).numel()) for p, g in zip(pred, gt)]
        assert [c.shape[0] for c in confs] == expected

    def test_torch_and_numpy_inputs(self):
        gen = torch.Generator().manual_seed(4)
        pred, gt = _random_maps(gen, 2, 7, 7, 5, 4)
        pred = pred + 5                                                   # non-negative for uint dtypes
        ref = hungarian_miou(pred, gt, 4)
        variants = [
            (pred.numpy(), gt.numpy()),
            (pred.numpy().astype(np.uint16), gt.numpy().astype(np.uint8)),
            (pred.int(), gt.numpy().astype(np.int32)),
            (pred.numpy(), gt.to(torch.uint8)),
        ]
        for p, g in variants:
            _assert_scores_equal(hungarian_miou(p, g, 4), ref, tol=0)

    @pytest.mark.parametrize("device", DEVICES)
    def test_device(self, device):
        gen = torch.Generator().manual_seed(5)
        pred, gt = _random_maps(gen, 2, 8, 8, 5, 4)
        confs = confusion_matrices(pred.to(device), gt.to(device), 4)
        assert all(c.device.type == device for c in confs)
        _assert_scores_equal(hungarian_miou(pred.to(device), gt.to(device), 4),
                             _ref_scores(pred.numpy(), gt.numpy(), 4))

    def test_reset(self):
        metric = HungarianMIoU(2)
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[1, 1]]))
        metric.reset()
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
        assert metric.compute()["mIoU"] == 1.0 and metric.num_images == 1

    def test_exception(self):
        gt = torch.zeros(2, 2, dtype=torch.long)
        with pytest.raises(ValueError, match="pred: expected the shape of gt"):
            hungarian_miou(torch.zeros(2, 3, dtype=torch.long), gt, 2)
        with pytest.raises(ValueError, match="pred: expected an integer label tensor"):
            hungarian_miou(torch.zeros(2, 2), gt, 2)
        with pytest.raises(ValueError, match="pred: expected an integer label tensor"):
            hungarian_miou(torch.zeros(2, 2, dtype=torch.bool), gt, 2)
        with pytest.raises(ValueError, match="gt: expected an integer label array"):
            hungarian_miou(np.zeros((2, 2), np.int64), np.zeros((2, 2)), 2)
        with pytest.raises(ValueError, match="non-empty"):
            hungarian_miou(torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long), 2)
        with pytest.raises(ValueError, match=r"pred: expected shape \(H, W\) or \(B, H, W\)"):
            four_d = torch.zeros(1, 1, 2, 2, dtype=torch.long)
            hungarian_miou(four_d, four_d, 2)
        with pytest.raises(ValueError, match=r"gt: expected class ids in \[0, 2\)"):
            hungarian_miou(gt, torch.tensor([[0, 1], [2, 255]]), 2)
        with pytest.raises(ValueError, match="ignore_index: expected a value outside"):
            HungarianMIoU(3, ignore_index=0)
        with pytest.raises(ValueError, match="num_classes: expected a positive int"):
            HungarianMIoU(0)
        with pytest.raises(TypeError, match=r"pred: expected a torch\.Tensor or numpy\.ndarray"):
            hungarian_miou([[0, 1]], gt, 2)
        with pytest.raises(RuntimeError, match="call update"):
            HungarianMIoU(2).compute()
        all_ignored = HungarianMIoU(2)
        all_ignored.update(gt, torch.full((2, 2), 255))
        with pytest.raises(RuntimeError, match="ignore_index"):
            all_ignored.compute()
        with pytest.raises(ValueError, match="confusion: expected shape"):
            match_segments(np.zeros(3))


class TestResizeLabels:
    @pytest.mark.parametrize("size", [(5, 7), (2, 3), (13, 4), (6, 6)])
    def test_matches_ref(self, size):
        gen = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 50, (2, 6, 6), generator=gen)
        ref = F.interpolate(labels[:, None].double(), size=size, mode="nearest-exact")[:, 0].long()
        out = resize_labels(labels, size)
        assert out.dtype == labels.dtype and out.shape == (2, *size)
        assert torch.equal(out, ref)
        np.testing.assert_array_equal(resize_labels(labels.numpy(), size), ref.numpy())
        assert torch.equal(resize_labels(labels[0], size), ref[0])

    def test_exact_large_ids(self):
        labels = torch.tensor([[2**53 + 1, 7], [-(2**60), 3]])
        out = resize_labels(labels, (4, 4))
        assert set(out.unique().tolist()) == set(labels.unique().tolist())
        assert torch.equal(out[::2, ::2], labels)

    def test_exception(self):
        with pytest.raises(ValueError, match="size: expected two positive ints"):
            resize_labels(torch.zeros(2, 2, dtype=torch.long), (0, 3))
        with pytest.raises(ValueError, match=r"labels: expected shape \(H, W\) or \(B, H, W\)"):
            resize_labels(torch.zeros(2, dtype=torch.long), (2, 2))
        with pytest.raises(TypeError, match=r"labels: expected a torch\.Tensor"):
            resize_labels([[1]], (2, 2))
