"""Evaluation runner: backbone cache, method grid, region scores, example figure (tiny fake BSDS500)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("scipy")

from diffcut_gpu.eval import BSDS500, HungarianMIoU, bsds_scores  # noqa: E402
from diffcut_gpu.eval.backbone_cache import BackboneSpec, build_cache, default_cache_dir, load_cached  # noqa: E402
from diffcut_gpu.eval.methods import Method, parse_method  # noqa: E402
from diffcut_gpu.eval.runner import _cut_all, evaluate  # noqa: E402
from diffcut_gpu.eval.scoring import GroundTruth, region_scores  # noqa: E402
from diffcut_gpu.spectral import recursive_ncut, reversibilize  # noqa: E402

SIZES = {"a": (24, 32), "b": (32, 24), "c": (24, 32)}  # two orientations, as in BSDS500


def write_fake_bsds(root: Path, split: str = "val") -> Path:
    """Three smooth random images with 2-3 annotators each, in the BSDS500 layout."""
    from PIL import Image
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for k, (name, (h, w)) in enumerate(SIZES.items()):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "groundTruth" / split).mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0:h, 0:w]
        left = xx < w // 2
        img = np.where(left[..., None], [200, 40, 40], [30, 60, 210]) + rng.integers(0, 30, (h, w, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / split / f"{name}.jpg")
        cells = np.empty((1, 2 + k % 2), dtype=object)
        for i in range(cells.shape[1]):
            seg = (1 + left + 2 * (yy < h // (2 + i))).astype(np.uint16)
            cells[0, i] = {"Segmentation": seg, "Boundaries": np.zeros((h, w), np.uint8)}
        savemat(root / "groundTruth" / split / f"{name}.mat", {"groundTruth": cells})
    return root


def write_tiny_model(path: Path) -> Path:
    """A 2-layer random-weight DINOv2 with 4-pixel patches, saved like a real checkpoint folder."""
    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, patch_size=4, image_size=16)
    transformers.Dinov2Model(config).save_pretrained(path)
    return path


class CountingBackbone:
    """Wraps a backbone and counts forward calls and images."""

    def __init__(self, backbone) -> None:
        self.backbone, self.calls, self.images = backbone, 0, 0

    def __call__(self, images):
        self.calls += 1
        self.images += images.shape[0]
        return self.backbone(images)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_fake_bsds(root / "bsds")
    model = write_tiny_model(root / "model")
    spec = BackboneSpec(str(model), layers=(-2, -1))
    dataset = BSDS500(data, "val")
    cache = root / "cache"
    stats = build_cache(dataset, spec, cache, batch_size=2, progress=False)
    return {"dataset": dataset, "spec": spec, "cache": cache, "stats": stats, "root": root}


METHODS = ["rwncut:threshold=0.6", "rwncut:power=2,threshold=dynamic", "features:threshold=0.6",
           "kmeans:threshold=0.6", "kmeans:on=features,threshold=0.6", "diffcut:threshold=0.6",
           "rwncut:threshold=modularity"]


class TestCache:
    def test_smoke(self, fixture):
        assert fixture["stats"]["computed"] == 3 and fixture["stats"]["cached"] == 0
        item = load_cached(fixture["cache"], "b")
        assert item["attention"].dtype == torch.float16 and item["features"].dtype == torch.float16
        assert item["grid"] == (8, 6) and item["image_size"] == (32, 24)
        assert item["attention"].shape == (48, 48) and item["features"].shape == (48, 32)
        torch.testing.assert_close(item["attention"].float().sum(-1), torch.ones(48), atol=2e-3, rtol=0)
        assert item["key"] == fixture["spec"].key()

    def test_matches_backbone(self, fixture):
        backbone = fixture["spec"].load()
        out = backbone(fixture["dataset"][0]["image"][None].float() / 255)
        item = load_cached(fixture["cache"], "a")
        torch.testing.assert_close(item["attention"].float(), out.attention[0], atol=1e-3, rtol=1e-2)
        torch.testing.assert_close(item["features"].float(), out.features[0], atol=1e-2, rtol=1e-2)

    def test_cache_hit(self, fixture, tmp_path):
        counting = CountingBackbone(fixture["spec"].load())
        stats = build_cache(fixture["dataset"], fixture["spec"], fixture["cache"], backbone=counting,
                            progress=False)
        assert counting.calls == 0 and stats == {**stats, "computed": 0, "cached": 3}
        # Another key (layers) in the same folder is a miss; images of one size share a batch.
        other = BackboneSpec(fixture["spec"].model_path, layers=(-1,))
        counting = CountingBackbone(other.load())
        build_cache(fixture["dataset"], other, tmp_path, backbone=counting, batch_size=8, progress=False)
        assert counting.images == 3 and counting.calls == 2
        counting = CountingBackbone(other.load())
        build_cache(fixture["dataset"], fixture["spec"], tmp_path, backbone=counting, progress=False)
        assert counting.images == 3

    def test_default_dir(self):
        spec = BackboneSpec("../shared/models/dinov2-small/")
        assert default_cache_dir(spec, "val") == Path("outputs/cache/dinov2-small-native/val")
        spec = BackboneSpec("m", layers=(-1,), resolution=448)
        assert default_cache_dir(spec, "train", "c") == Path("c/m-448-L-1/train")

    def test_exception(self, fixture, tmp_path):
        with pytest.raises(FileNotFoundError, match="model_path: expected a transformers checkpoint"):
            BackboneSpec(str(tmp_path / "nope")).load()
        with pytest.raises(FileNotFoundError, match="3 missing"):
            evaluate(fixture["dataset"], tmp_path, ["rwncut"], progress=False)
        other = BackboneSpec(fixture["spec"].model_path, layers=(-1,))
        with pytest.raises(ValueError, match="cache: expected outputs of"):
            evaluate(fixture["dataset"], fixture["cache"], ["rwncut"], spec=other, progress=False)
        evaluate(fixture["dataset"], fixture["cache"], ["rwncut"], spec=fixture["spec"], progress=False)
        with pytest.raises(ValueError, match="batch_size"):
            build_cache(fixture["dataset"], fixture["spec"], tmp_path, batch_size=0)


class TestEvaluate:
    def test_smoke(self, fixture):
        result = evaluate(fixture["dataset"], fixture["cache"], METHODS, min_size=2, chunk_size=2,
                          examples=["b"], progress=False)
        assert list(result.summary) == [parse_method(m).name for m in METHODS]
        for name, row in result.summary.items():
            assert row["num_images"] == 3 and len(result.per_image[name]) == 3
            for key in ("covering", "pri", "miou", "pixel_accuracy"):
                assert 0.0 <= row[key] <= 1.0, (name, key)
            assert row["vi"] >= 0 and row["segments"] >= 1
        assert set(result.timing) >= {"load", "graph", "ncut", "upsample", "metrics"}
        ex = result.examples["b"]
        assert ex["gt"].shape == (32, 24) and set(ex["pred"]) == set(result.summary)
        json.dumps(result.to_json())

    def test_kmeans_matches_segment_count(self, fixture):
        methods = ["rwncut:threshold=1.5", "kmeans:threshold=1.5"]
        result = evaluate(fixture["dataset"], fixture["cache"], methods, min_size=2, progress=False)
        ours, theirs = result.per_image.values()
        # k-means is asked for the RW-NCut count; Lloyd may leave clusters empty, never add any.
        assert all(1 < t["segments"] <= o["segments"] for o, t in zip(ours, theirs))

    def test_chunking_invariant(self, fixture):
        methods = ["rwncut:threshold=0.7", "features:threshold=otsu"]
        data, cache = fixture["dataset"], fixture["cache"]
        one = evaluate(data, cache, methods, min_size=2, chunk_size=1, progress=False)
        all_ = evaluate(data, cache, methods, min_size=2, chunk_size=8, progress=False)
        for name in one.summary:
            for key in ("covering", "miou", "segments"):
                assert one.summary[name][key] == pytest.approx(all_.summary[name][key], abs=1e-6)

    def test_exception(self, fixture):
        with pytest.raises(ValueError, match="upsample: expected"):
            evaluate(fixture["dataset"], fixture["cache"], ["rwncut"], upsample="bicubic")
        with pytest.raises(ValueError, match="methods: expected at least one"):
            evaluate(fixture["dataset"], fixture["cache"], [])
        with pytest.raises(ValueError, match="min_size"):
            evaluate(fixture["dataset"], fixture["cache"], ["rwncut"], min_size=0)


class TestGrid:
    @pytest.mark.parametrize("seed", [0, 1])
    def test_cut_all_matches_separate_runs(self, seed):
        """One hierarchy re-cut at every tau equals one recursion per tau (the grid never recomputes)."""
        g = torch.Generator().manual_seed(seed)
        feats = torch.randn(3, 64, 6, generator=g, dtype=torch.float64)
        P = torch.softmax(4 * feats @ feats.transpose(1, 2) / 6**0.5, -1)
        W = reversibilize(P)
        taus = [0.2, 0.35, 0.5, 0.7, 0.9]
        grid = _cut_all(W, set(taus), min_size=2, max_depth=6)
        full = _cut_all(W, {*taus, "otsu"}, min_size=2, max_depth=6)
        for tau in taus:
            ref = recursive_ncut(W, threshold=tau, min_size=2, max_depth=6).labels
            assert torch.equal(grid[tau][0], ref), tau
            assert torch.equal(full[tau][0], ref), tau
        ref = recursive_ncut(W, threshold="otsu", min_size=2, max_depth=6)
        assert torch.equal(full["otsu"][0], ref.labels)
        torch.testing.assert_close(full["otsu"][1], ref.thresholds.cpu())


class TestRegionScores:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_matches_ref(self, seed):
        """Against bsds_scores and one HungarianMIoU per annotator (its regions as classes), averaged."""
        rng = np.random.default_rng(seed)
        h, w = 23, 31
        pred = torch.from_numpy(rng.integers(0, 7, (h, w)) * 10 + 5)
        gts = [torch.from_numpy(rng.integers(1, 2 + k * 3, (h, w))) for k in range(1, 4)]
        gts[0][:5] = 99  # ids need not be consecutive
        got = region_scores(pred, gts)
        ref = bsds_scores(pred, gts)
        miou, acc = [], []
        for g in gts:
            _, local = np.unique(g.numpy(), return_inverse=True)
            metric = HungarianMIoU(int(local.max()) + 1, ignore_index=None)
            metric.update(pred, torch.from_numpy(local.reshape(h, w)))
            out = metric.compute()
            miou.append(out["mIoU"])
            acc.append(out["pixel_accuracy"])
        for key in ("covering", "pri", "vi"):
            assert got[key] == pytest.approx(ref[key], abs=1e-12)
        assert got["miou"] == pytest.approx(np.mean(miou), abs=1e-12)
        assert got["pixel_accuracy"] == pytest.approx(np.mean(acc), abs=1e-12)

    def test_perfect(self):
        gt = torch.arange(12).view(3, 4) // 6 + 1
        got = region_scores(gt * 7, [gt, gt])
        assert got == {"covering": 1.0, "pri": 1.0, "vi": 0.0, "miou": 1.0, "pixel_accuracy": 1.0}

    def test_exception(self):
        with pytest.raises(ValueError, match="pred: expected the ground-truth shape"):
            region_scores(torch.zeros(3, 4, dtype=torch.long), [torch.ones(4, 3, dtype=torch.long)])
        with pytest.raises(ValueError, match="gts: expected region maps of one shape"):
            GroundTruth.from_maps([torch.ones(3, 4), torch.ones(4, 3)])


class TestMethod:
    def test_round_trip(self):
        for text in [*METHODS, "features:threshold=0.3,alpha=5"]:
            m = parse_method(text)
            assert parse_method(m.name) == m
        assert parse_method("rwncut", threshold=0.25, power=4) == Method("rwncut", threshold=0.25, power=4)
        assert parse_method("rwncut:power=2", power=4).power == 2

    def test_exception(self):
        with pytest.raises(ValueError, match="expected a kind"):
            parse_method("spectral")
        with pytest.raises(ValueError, match="with keys"):
            parse_method("rwncut:tau=0.3")
        with pytest.raises(ValueError, match="a number for the diffcut baseline"):
            parse_method("diffcut")
        with pytest.raises(ValueError, match="threshold: expected a number, 'dynamic' or one of"):
            parse_method("rwncut:threshold=magic")
        with pytest.raises(ValueError, match="power"):
            Method("rwncut", power=0)


class TestFigure:
    def test_smoke(self, fixture, tmp_path):
        pytest.importorskip("matplotlib")
        from PIL import Image

        from diffcut_gpu.eval.figures import plot_examples

        result = evaluate(fixture["dataset"], fixture["cache"], METHODS[:2], min_size=2, examples=["a", "b"],
                          progress=False)
        path = plot_examples(result.examples, list(result.summary), tmp_path / "fig" / "ex.png")
        with Image.open(path) as im:
            assert im.size[0] > 200 and im.size[1] > 100
        with pytest.raises(ValueError, match="examples: expected at least one image"):
            plot_examples({}, [], tmp_path / "x.png")

    def test_mosaic_matches_ref(self):
        from diffcut_gpu.eval.figures import mean_colour_mosaic

        rng = np.random.default_rng(0)
        image = rng.integers(0, 256, (3, 9, 11), dtype=np.uint8)
        labels = rng.integers(0, 4, (9, 11))
        got = mean_colour_mosaic(torch.from_numpy(image), torch.from_numpy(labels))
        for y in range(9):
            for x in range(11):
                edge = (x + 1 < 11 and labels[y, x + 1] != labels[y, x]) or (
                    y + 1 < 9 and labels[y + 1, x] != labels[y, x])
                want = 255 if edge else image[:, labels == labels[y, x]].astype(np.float64).mean(1).round()
                np.testing.assert_array_equal(got[y, x], want)


SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REAL = (SHARED / "data" / "bsds500" / "images" / "val").is_dir() and (
    SHARED / "models" / "dinov2-small" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not REAL, reason=f"BSDS500 or dinov2-small not found under {SHARED}")
def test_real_image(tmp_path):
    """One real val image through DINOv2-S: RW-NCut segments it and covers its annotators far above chance."""
    dataset = BSDS500(SHARED / "data" / "bsds500", "val", limit=1)
    spec = BackboneSpec(str(SHARED / "models" / "dinov2-small"))
    assert build_cache(dataset, spec, tmp_path, progress=False)["computed"] == 1
    result = evaluate(dataset, tmp_path, ["rwncut:threshold=0.7", "rwncut:threshold=0.05"], spec=spec,
                      progress=False)
    cut, single = result.summary.values()
    assert single["segments"] == 1 and 3 <= cut["segments"] <= 60
    assert cut["covering"] > single["covering"] + 0.1 and cut["miou"] > 2 * single["miou"]
