"""Output files: atomic writes, 16-bit PNG and npy round trips, overlay and boundaries vs references."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from diffcut_gpu.io import (
    atomic_write_bytes,
    boundaries,
    label_colors,
    label_png_bytes,
    output_paths,
    outputs_complete,
    outputs_exist,
    overlay,
    write_outputs,
)


def random_labels(h=30, w=40, k=6, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, k, (h // 5 + 1, w // 5 + 1))
    return np.kron(blocks, np.ones((5, 5), dtype=np.int64))[:h, :w]


def boundaries_ref(labels: np.ndarray) -> np.ndarray:
    """Loop reference: a pixel is a boundary when its right or lower neighbour differs."""
    h, w = labels.shape
    out = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if x + 1 < w and labels[y, x] != labels[y, x + 1]:
                out[y, x] = True
            if y + 1 < h and labels[y, x] != labels[y + 1, x]:
                out[y, x] = True
    return out


def test_output_paths():
    paths = output_paths("out", "sub/cat", ["overlay", "png16", "npy", "json"])
    assert {k: p.as_posix() for k, p in paths.items()} == {
        "overlay": "out/sub/cat.overlay.png",
        "png16": "out/sub/cat.labels.png",
        "npy": "out/sub/cat.labels.npy",
        "json": "out/sub/cat.json",
    }
    with pytest.raises(ValueError, match="formats: expected a subset"):
        output_paths("out", "cat", ["jpeg"])


def test_atomic_write(tmp_path):
    path = tmp_path / "deep" / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["f.bin"]  # no temp file left


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_matches_ref_boundaries():
    for seed in range(3):
        labels = random_labels(seed=seed)
        np.testing.assert_array_equal(boundaries(labels), boundaries_ref(labels))
    thick = boundaries(labels, width=2)
    assert (thick >= boundaries(labels)).all() and thick.sum() > boundaries(labels).sum()


def test_matches_ref_overlay():
    labels = random_labels(seed=3)
    image = np.random.default_rng(4).integers(0, 256, (*labels.shape, 3), dtype=np.uint8)
    out = overlay(image, labels)
    colors = label_colors(int(labels.max()) + 1).astype(np.float64)
    ref = np.floor(0.5 * image.astype(np.float64) + 0.5 * colors[labels] + 0.5)
    ref[boundaries_ref(labels)] = 255
    assert np.abs(out.astype(np.float64) - ref).max() <= 1  # float32 blending vs float64


def test_label_colors_distinct():
    colors = label_colors(64)
    assert colors.shape == (64, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 64


def test_label_png_16bit_roundtrip(tmp_path):
    labels = np.random.default_rng(5).integers(0, 65536, (20, 30))
    (tmp_path / "l.png").write_bytes(label_png_bytes(labels))
    img = Image.open(tmp_path / "l.png")
    assert img.mode.startswith("I")
    np.testing.assert_array_equal(np.asarray(img), labels)
    with pytest.raises(ValueError, match="labels: expected values in"):
        label_png_bytes(np.array([[70000]]))


def test_write_outputs(tmp_path):
    labels = random_labels(seed=6)
    image = np.zeros((*labels.shape, 3), dtype=np.uint8)
    paths = output_paths(tmp_path, "a/b", ["overlay", "png16", "npy", "json"])
    assert not outputs_exist(paths)
    record = {"threshold": 0.5, "bad": float("nan"), "tree": [{"id": 0, "ncut": float("inf")}]}
    write_outputs(paths, image, labels, record)
    assert outputs_exist(paths)
    np.testing.assert_array_equal(np.load(paths["npy"]), labels)
    assert np.load(paths["npy"]).dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(Image.open(paths["png16"])), labels)
    assert Image.open(paths["overlay"]).size == (labels.shape[1], labels.shape[0])
    data = json.loads(paths["json"].read_text())  # strict JSON: NaN / inf became null
    assert data == {"threshold": 0.5, "bad": None, "tree": [{"id": 0, "ncut": None}]}


def test_exception():
    with pytest.raises(ValueError, match="labels: expected shape"):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.int64))
    with pytest.raises(ValueError, match="image: expected"):
        overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.int64))
    with pytest.raises(ValueError, match="record: expected"):
        write_outputs({"json": "x.json"}, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.int64))


@pytest.mark.parametrize("fmt", ["overlay", "png16", "npy", "json"])
@pytest.mark.parametrize("damage", ["empty", "half", "one byte short"])
def test_outputs_complete_rejects_damaged_files(tmp_path, fmt, damage):
    labels = random_labels(seed=7)
    image = np.zeros((*labels.shape, 3), dtype=np.uint8)
    paths = output_paths(tmp_path, "img", ["overlay", "png16", "npy", "json"])
    write_outputs(paths, image, labels, {"tree": [{"id": 0}]})
    assert outputs_complete(paths)
    data = paths[fmt].read_bytes()
    cut = {"empty": 0, "half": len(data) // 2, "one byte short": len(data) - 1}[damage]
    paths[fmt].write_bytes(data[:cut])
    assert outputs_exist(paths) and not outputs_complete(paths)
    paths[fmt].unlink()
    assert not outputs_complete(paths)
