"""Tests for diffcut_gpu.eval.datasets and label_tables: real BSDS500 if present, tiny fixtures otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffcut_gpu.eval import (
    BSDS500,
    CITYSCAPES27_CLASSES,
    COCOSTUFF27_CLASSES,
    COCOSTUFF_FINE_TO_COARSE,
    Cityscapes27,
    COCOStuff27,
    ImageFolderWithLabels,
    read_label_png,
)

BSDS_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bsds500"


def _save_rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _save_label(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _write_fake_bsds(root: Path, split: str, annotations: dict[str, list[np.ndarray]]) -> None:
    from scipy.io import savemat

    for k, (name, segs) in enumerate(annotations.items()):
        h, w = segs[0].shape
        _save_rgb(root / "images" / split / f"{name}.jpg", h, w, k)
        cells = np.empty((1, len(segs)), dtype=object)
        for i, seg in enumerate(segs):
            cells[0, i] = {"Segmentation": seg.astype(np.uint16), "Boundaries": np.zeros_like(seg, np.uint8)}
        (root / "groundTruth" / split).mkdir(parents=True, exist_ok=True)
        savemat(root / "groundTruth" / split / f"{name}.mat", {"groundTruth": cells})


@pytest.mark.skipif(not BSDS_ROOT.is_dir(), reason=f"BSDS500 not found at {BSDS_ROOT}")
class TestBSDS500Real:
    def test_smoke(self):
        ds = BSDS500(BSDS_ROOT, split="val", limit=2)
        assert len(ds) == 2 and len(BSDS500(BSDS_ROOT, split="val")) == 100
        names = [ds[i]["name"] for i in range(2)]
        assert names == sorted(names)
        for i in range(2):
            item = ds[i]
            img, gts = item["image"], item["gt"]
            assert img.dtype == torch.uint8 and img.shape[0] == 3
            assert tuple(img.shape[1:]) in ((321, 481), (481, 321))
            assert 5 <= len(gts) <= 8                                           # val: 5..8 annotators
            for g in gts:
                assert g.dtype == torch.int64 and g.shape == img.shape[1:]
                assert int(g.min()) >= 1 and int(g.unique().numel()) >= 2


class TestBSDS500:
    def test_smoke(self, tmp_path):
        a = np.array([[1, 1, 2], [3, 3, 2]])
        b = np.array([[1, 2, 2], [1, 2, 2]])
        _write_fake_bsds(tmp_path, "val", {"2": [a, b], "1": [b]})
        ds = BSDS500(tmp_path, "val")
        assert [ds[i]["name"] for i in range(len(ds))] == ["1", "2"]
        item = ds[1]
        assert item["image"].shape == (3, 2, 3) and item["image"].dtype == torch.uint8
        assert len(item["gt"]) == 2
        assert torch.equal(item["gt"][0], torch.from_numpy(a))
        assert torch.equal(item["gt"][1], torch.from_numpy(b))
        assert len(BSDS500(tmp_path, "val", limit=1)) == 1

    def test_exception(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="BSDS500 root"):
            BSDS500(tmp_path / "missing")
        with pytest.raises(FileNotFoundError, match="images/"):
            BSDS500(tmp_path)
        _write_fake_bsds(tmp_path, "val", {"1": [np.ones((2, 2), np.int64)]})
        (tmp_path / "groundTruth" / "val" / "1.mat").unlink()
        with pytest.raises(FileNotFoundError, match=r"1\.mat"):
            BSDS500(tmp_path)
        with pytest.raises(ValueError, match="split: expected"):
            BSDS500(tmp_path, split="trainval")


class TestImageFolderWithLabels:
    def test_smoke(self, tmp_path):
        rgb = _save_rgb(tmp_path / "img" / "b.png", 3, 4, 0)
        _save_rgb(tmp_path / "img" / "a.png", 2, 2, 1)
        lab8 = np.array([[0, 1, 2, 255], [3, 3, 3, 3], [255, 0, 0, 1]], dtype=np.uint8)
        lab16 = np.array([[300, 65535], [0, 1000]], dtype=np.uint16)
        _save_label(tmp_path / "lab" / "b.png", lab8)
        _save_label(tmp_path / "lab" / "a.png", lab16)
        ds = ImageFolderWithLabels(tmp_path / "img", tmp_path / "lab")
        assert len(ds) == 2 and ds[0]["name"] == "a"
        assert torch.equal(ds[1]["image"], torch.from_numpy(rgb).permute(2, 0, 1))
        assert ds[1]["gt"].dtype == torch.int64
        assert torch.equal(ds[1]["gt"], torch.from_numpy(lab8.astype(np.int64)))
        assert torch.equal(ds[0]["gt"], torch.from_numpy(lab16.astype(np.int64)))   # 16-bit PNG exact

    def test_label_map_and_suffix(self, tmp_path):
        _save_rgb(tmp_path / "img" / "x.jpg", 2, 3, 0)
        _save_label(tmp_path / "lab" / "x_lbl.png", np.array([[0, 1, 2], [7, 255, 1]], dtype=np.uint8))
        ds = ImageFolderWithLabels(tmp_path / "img", tmp_path / "lab", label_map={1: 0, 2: 1, 7: 2},
                                   label_suffix="_lbl")
        assert ds[0]["gt"].tolist() == [[255, 0, 1], [2, 255, 0]]

    def test_palette_png(self, tmp_path):
        im = Image.frombytes("P", (2, 2), np.array([[0, 5], [20, 255]], dtype=np.uint8).tobytes())
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])   # VOC-style colour palette
        im.save(tmp_path / "p.png")
        with Image.open(tmp_path / "p.png") as check:
            assert check.mode == "P"
        assert read_label_png(tmp_path / "p.png").tolist() == [[0, 5], [20, 255]]

    def test_exception(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="images_dir"):
            ImageFolderWithLabels(tmp_path / "nope", tmp_path)
        _save_rgb(tmp_path / "img" / "x.png", 2, 2, 0)
        (tmp_path / "lab").mkdir()
        with pytest.raises(FileNotFoundError, match=r"x\.png"):
            ImageFolderWithLabels(tmp_path / "img", tmp_path / "lab")
        _save_rgb(tmp_path / "lab" / "x.png", 2, 2, 1)                          # colour-coded label
        with pytest.raises(ValueError, match="single-channel label PNG"):
            ImageFolderWithLabels(tmp_path / "img", tmp_path / "lab")[0]


class TestCOCOStuff27:
    def test_label_table(self):
        assert len(COCOSTUFF27_CLASSES) == 27 and len(set(COCOSTUFF27_CLASSES)) == 27
        assert sorted(COCOSTUFF_FINE_TO_COARSE) == list(range(182))
        things = {COCOSTUFF_FINE_TO_COARSE[i] for i in range(91)}
        stuff = {COCOSTUFF_FINE_TO_COARSE[i] for i in range(91, 182)}
        assert things == set(range(12)) and stuff == set(range(12, 27))
        spot = {0: "person", 2: "vehicle", 15: "animal", 61: "furniture", 91: "textile", 120: "food-stuff",
                148: "ground", 156: "sky", 170: "wall", 179: "window", 181: "solid"}
        for fine, name in spot.items():                                         # value = COCO id - 1
            assert COCOSTUFF27_CLASSES[COCOSTUFF_FINE_TO_COARSE[fine]] == name

    def _tree(self, root: Path) -> np.ndarray:
        fine = np.array([[0, 255, 91], [181, 156, 2]], dtype=np.uint8)
        for i, name in enumerate(["000000000285", "000000000139", "000000000632"]):
            _save_rgb(root / "images" / "val2017" / f"{name}.jpg", 2, 3, i)
            _save_label(root / "annotations" / "val2017" / f"{name}.png", fine)
        (root / "curated" / "val2017").mkdir(parents=True)
        (root / "curated" / "val2017" / COCOStuff27.CURATED_LIST).write_text("000000000632\n000000000139\n")
        return fine

    def test_smoke(self, tmp_path):
        fine = self._tree(tmp_path)
        ds = COCOStuff27(tmp_path)
        assert len(ds) == 2 and [ds[i]["name"] for i in range(2)] == ["000000000139", "000000000632"]
        expected = [[COCOSTUFF_FINE_TO_COARSE[int(v)] if v != 255 else 255 for v in row] for row in fine]
        assert expected == [[9, 255, 17], [24, 23, 11]]
        item = ds[0]
        assert item["gt"].dtype == torch.int64 and item["gt"].tolist() == expected
        assert item["image"].shape == (3, 2, 3) and item["image"].dtype == torch.uint8
        assert len(COCOStuff27(tmp_path, curated=False)) == 3
        assert len(COCOStuff27(tmp_path, curated=False, limit=1)) == 1

    def test_exception(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="COCO-Stuff root"):
            COCOStuff27(tmp_path / "missing")
        self._tree(tmp_path)
        (tmp_path / "curated" / "val2017" / COCOStuff27.CURATED_LIST).unlink()
        with pytest.raises(FileNotFoundError, match="Coco164kFull_Stuff_Coarse_7"):
            COCOStuff27(tmp_path)
        (tmp_path / "images" / "val2017" / "000000000139.jpg").unlink()
        with pytest.raises(FileNotFoundError, match="000000000139"):
            COCOStuff27(tmp_path, curated=False)


class TestCityscapes27:
    def _tree(self, root: Path) -> np.ndarray:
        ids = np.array([[0, 6, 7], [23, 33, 26]], dtype=np.uint8)
        for i, name in enumerate(["frankfurt_000000_000294", "aachen_000000_000019"]):
            city = name.split("_")[0]
            _save_rgb(root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png", 2, 3, i)
            _save_label(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png", ids)
        return ids

    def test_smoke(self, tmp_path):
        self._tree(tmp_path)
        ds = Cityscapes27(tmp_path)
        assert [ds[i]["name"] for i in range(2)] == ["aachen_000000_000019", "frankfurt_000000_000294"]
        # void ids 0, 6 -> ignore; 7 road -> 0, 23 sky -> 16, 33 bicycle -> 26, 26 car -> 19
        assert ds[0]["gt"].tolist() == [[255, 255, 0], [16, 26, 19]]
        assert [CITYSCAPES27_CLASSES[c] for c in (0, 16, 26, 19)] == ["road", "sky", "bicycle", "car"]
        assert ds[1]["image"].shape == (3, 2, 3)
        assert len(Cityscapes27(tmp_path, limit=1)) == 1

    def test_exception(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="Cityscapes root"):
            Cityscapes27(tmp_path / "missing")
        self._tree(tmp_path)
        (tmp_path / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000019_leftImg8bit.png").unlink()
        with pytest.raises(FileNotFoundError, match="aachen_000000_000019_leftImg8bit"):
            Cityscapes27(tmp_path)
        with pytest.raises(FileNotFoundError, match="gtFine"):
            Cityscapes27(tmp_path, split="train")
