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
