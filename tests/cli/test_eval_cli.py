"""``diffcut-gpu eval``: end to end on a tiny fake BSDS500 with the tiny random-weight DINOv2 (tiny_vit)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")

from diffcut_gpu.cli import eval as eval_cli
from diffcut_gpu.cli.main import main


def write_fake_bsds(root: Path, split: str = "val") -> Path:
    """Three two-region images (both orientations) with two annotators each, in the BSDS500 layout."""
    from PIL import Image
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(42, 56), (56, 42), (42, 56)]):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "groundTruth" / split).mkdir(parents=True, exist_ok=True)
        left = np.arange(w)[None, :] < w // 2
        img = np.where(left[..., None], [220, 30, 30], [20, 40, 200]) + rng.integers(0, 40, (h, w, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / split / f"im{k}.jpg")
        cells = np.empty((1, 2), dtype=object)
        for i in range(2):
            seg = np.broadcast_to(1 + left, (h, w)).astype(np.uint16) + (np.arange(h)[:, None] < 5 * i)
            cells[0, i] = {"Segmentation": seg, "Boundaries": np.zeros((h, w), np.uint8)}
        savemat(root / "groundTruth" / split / f"im{k}.mat", {"groundTruth": cells})
    return root


@pytest.fixture
def bsds(tmp_path) -> Path:
    return write_fake_bsds(tmp_path / "bsds")


@pytest.mark.slow
def test_smoke(bsds, tiny_vit, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "--root", str(bsds), "--model-path", str(tiny_vit), "--resolution", "84",
            "--cache-dir", str(tmp_path / "cache"), "--methods", "rwncut", "kmeans", "diffcut:threshold=0.9",
            "--threshold", "0.9,dynamic", "--min-size", "2", "--examples", "2", "--device", "cpu", "--quiet",
            "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    names = ["rwncut:power=1,threshold=0.9", "rwncut:power=1,threshold=dynamic",
             "kmeans:on=attention,power=1,threshold=0.9", "kmeans:on=attention,power=1,threshold=dynamic",
             "diffcut:threshold=0.9"]
    assert list(metrics["summary"]) == names
    for row in metrics["summary"].values():
        assert row["num_images"] == 3
        assert 0 <= row["covering"] <= 1 and 0 <= row["miou"] <= 1 and 0 <= row["pri"] <= 1 and row["vi"] >= 0
    assert metrics["cache"]["computed"] == 3 and metrics["backbone"]["resolution"] == 84
    assert set(metrics["timing"]) >= {"backbone", "ncut", "upsample", "metrics", "total"}
    table = (out / "results.md").read_text()
    assert all(f"`{n}`" in table and f"`{n}`" in printed for n in names)
    from PIL import Image

    with Image.open(out / "examples.png") as im:
        assert im.size[0] > 300

    # Second run: every backbone output comes from the cache.
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["cache"] == {
        **metrics["cache"], "computed": 0, "cached": 3, "backbone_s": 0.0, "images_per_s": None}


def test_registered():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    eval_cli.add_parser(sub)
    args = parser.parse_args(["eval", "--root", "r", "--model-path", "m", "--out", "o", "--power", "1,2",
                              "--threshold", "0.3,otsu"])
    assert args._run is eval_cli.run and args.power == [1, 2] and args.threshold == [0.3, "otsu"]


def test_exception(bsds, tiny_vit, tmp_path, capsys):
    base = ["eval", "--out", str(tmp_path / "out"), "--quiet"]
    assert main([*base, "--root", str(tmp_path / "missing"), "--model-path", str(tiny_vit)]) == 2
    err = capsys.readouterr().err
    assert "BSDS500 root: expected a directory" in err and "missing" in err
    assert main([*base, "--root", str(bsds), "--model-path", str(tmp_path / "nomodel")]) == 2
    assert "--model-path: expected a transformers checkpoint folder" in capsys.readouterr().err
    assert main([*base, "--root", str(bsds), "--model-path", str(tiny_vit), "--methods", "diffcut"]) == 2
    assert "a number for the diffcut baseline" in capsys.readouterr().err
    assert main([*base, "--root", str(bsds), "--model-path", str(tiny_vit), "--methods", "spectral"]) == 2
    assert "expected a kind" in capsys.readouterr().err
    assert main([*base, "--root", str(bsds), "--model-path", str(tiny_vit), "--power", "x"]) == 2


# -- the other datasets and the diffusion backbone, each on a tiny folder in its real layout ---------------

SIZES = [(42, 56), (56, 42), (42, 56)]


def _two_region_image(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A red left half and a blue right half with noise; the boolean left-half mask."""
    rng = np.random.default_rng(seed)
    left = np.broadcast_to(np.arange(w)[None, :] < w // 2, (h, w))
    img = np.where(left[..., None], [220, 30, 30], [20, 40, 200]) + rng.integers(0, 40, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8), left


def write_fake_coco(root: Path) -> Path:
    """COCO-Stuff layout: images/val2017, annotations/val2017 (fine ids), the curated id list."""
    from PIL import Image

    for sub in ("images/val2017", "annotations/val2017", "curated/val2017"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for k, (h, w) in enumerate(SIZES):
        img, left = _two_region_image(h, w, k)
        name = f"{k:012d}"
        ids.append(name)
        Image.fromarray(img).save(root / "images/val2017" / f"{name}.jpg")
        fine = np.where(left, 0, 156).astype(np.uint8)  # person (things) | sky-other (stuff)
        fine[:2] = 255  # unlabeled rows
        Image.fromarray(fine).save(root / "annotations/val2017" / f"{name}.png")
    (root / "curated/val2017/Coco164kFull_Stuff_Coarse_7.txt").write_text("\n".join(ids) + "\n")
    return root


def write_fake_cityscapes(root: Path) -> Path:
    """Cityscapes layout: leftImg8bit/val/<city>/*_leftImg8bit.png, gtFine/val/<city>/*_gtFine_labelIds.png."""
    from PIL import Image

    for k, (h, w) in enumerate(SIZES):
        city = ("aachen", "bonn")[k % 2]
        name = f"{city}_000000_{k:06d}"
        img, left = _two_region_image(h, w, k)
        (root / "leftImg8bit/val" / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine/val" / city).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "leftImg8bit/val" / city / f"{name}_leftImg8bit.png")
        ids = np.where(left, 7, 23).astype(np.uint8)  # road | sky
        ids[:, :2] = 0  # void columns
        Image.fromarray(ids).save(root / "gtFine/val" / city / f"{name}_gtFine_labelIds.png")
    return root


def write_fake_folder(root: Path) -> Path:
    """Label-folder layout: images/<stem>.png and labels/<stem>.png with class ids."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for k, (h, w) in enumerate(SIZES):
        img, left = _two_region_image(h, w, k)
        Image.fromarray(img).save(root / "images" / f"p{k}.png")
        Image.fromarray(np.where(left, 1, 4).astype(np.uint8)).save(root / "labels" / f"p{k}.png")
    return root


WRITERS = {"coco-stuff-27": write_fake_coco, "cityscapes": write_fake_cityscapes, "folder": write_fake_folder}


@pytest.mark.parametrize("dataset", list(WRITERS))
def test_class_datasets(dataset, tiny_vit, tmp_path):
    """The reported mIoU / pixel accuracy are the dataset-level protocol on the method's pixel labels."""
    from diffcut_gpu.eval import HungarianMIoU
    from diffcut_gpu.eval.runner import evaluate

    root = WRITERS[dataset](tmp_path / "data")
    out, cache = tmp_path / "out", tmp_path / "cache"
    method = "rwncut:power=1,threshold=0.9"
    argv = ["eval", "--dataset", dataset, "--root", str(root), "--model-path", str(tiny_vit),
            "--resolution", "84", "--cache-dir", str(cache), "--methods", "rwncut", "--threshold", "0.9",
            "--min-size", "2", "--examples", "0", "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    row = metrics["summary"][method]
    assert row["num_images"] == 3 and "covering" not in row

    data = eval_cli.load_dataset(dataset, str(root), "val", None)
    names = [data[i]["name"] for i in range(len(data))]
    pred = evaluate(data, cache, [method], min_size=2, examples=names, progress=False).examples
    num_classes = 27 if dataset != "folder" else 5
    ref = HungarianMIoU(num_classes)
    for i in range(len(data)):
        ref.update(pred[names[i]]["pred"][method], data[i]["gt"])
    expected = ref.compute()
    assert row["miou"] == pytest.approx(expected["mIoU"], abs=1e-12)
    assert row["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-12)
    per_image = [r["miou"] for r in metrics["per_image"][method]]
    assert row["miou_per_image"] == pytest.approx(np.mean(per_image), abs=1e-12)


def test_diffusion_backbone(bsds, tmp_path):
    """``--backbone diffusion`` on a tiny random-weight pipeline folder: the cache holds its attention."""
    pytest.importorskip("diffusers")
    import torch

    from diffcut_gpu.eval import BSDS500
    from diffcut_gpu.eval.backbone_cache import load_cached
    from diffcut_gpu.models import DiffusionBackbone
    from diffcut_gpu.models.vit import target_size
    from tests.models.test_diffusion import _write_snapshot

    snapshot = tmp_path / "tiny-sd"
    _write_snapshot(snapshot, xl=False)
    out, cache = tmp_path / "out", tmp_path / "cache"
    argv = ["eval", "--root", str(bsds), "--backbone", "diffusion", "--model-path", str(snapshot),
            "--cache-dir", str(cache), "--methods", "rwncut", "--threshold", "0.9", "--min-size", "2",
            "--examples", "0", "--device", "cpu", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"]["backbone"] == "diffusion" and metrics["cache"]["computed"] == 3

    backbone = DiffusionBackbone.from_pretrained(snapshot, device="cpu", local_files_only=True)
    item = BSDS500(bsds, "val")[0]
    image = item["image"][None].float() / 255
    size = target_size(*image.shape[-2:], 4, None)  # the tiny VAE x UNet stride is 2 x 2
    image = torch.nn.functional.interpolate(image, size=size, mode="bilinear", antialias=True).clamp(0, 1)
    ref = backbone(image)
    cached = load_cached(cache, item["name"])
    assert tuple(cached["grid"]) == tuple(ref.grid)
    # float16 storage; the cache ran this image batched with another one of its size (float32 rounding)
    torch.testing.assert_close(cached["attention"].float(), ref.attention[0].float(), atol=1e-5, rtol=2e-3)


def test_unknown_dataset_layout(tmp_path, tiny_vit, capsys):
    base = ["eval", "--out", str(tmp_path / "out"), "--quiet", "--model-path", str(tiny_vit)]
    assert main([*base, "--dataset", "coco-stuff-27", "--root", str(tmp_path)]) == 2
    assert "COCO-Stuff images: expected a directory" in capsys.readouterr().err
    assert main([*base, "--dataset", "cityscapes", "--root", str(tmp_path)]) == 2
    assert "Cityscapes images: expected a directory" in capsys.readouterr().err
    assert main([*base, "--dataset", "folder", "--root", str(tmp_path)]) == 2
    assert "images_dir: expected a directory" in capsys.readouterr().err
    assert main([*base, "--backbone", "diffusion", "--root", str(write_fake_bsds(tmp_path / "b"))]) == 2
    assert "--model-path: expected a diffusers pipeline folder" in capsys.readouterr().err
