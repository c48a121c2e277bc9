"""read_image: every kind of file a photo folder holds becomes RGB uint8, or fails with one clear reason."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from diffcut_gpu.io import ImageReadError, image_extensions, read_image


def rgb_image(h: int = 40, w: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_smoke(tmp_path):
    arr = rgb_image()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (40, 50, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, arr)


def test_extensions():
    exts = image_extensions()
    assert {".jpg", ".jpeg", ".png", ".tif", ".bmp", ".webp"} <= exts
    assert ".txt" not in exts and ".pdf" not in exts


def test_grayscale(tmp_path):
    gray = rgb_image()[..., 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_matches_ref_alpha_on_white(tmp_path):
    rgb = rgb_image()
    alpha = np.random.default_rng(1).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "a.png")
    ref = rgb.astype(np.float64) * (alpha[..., None] / 255.0) + 255.0 * (1 - alpha[..., None] / 255.0)
    out = read_image(tmp_path / "a.png")
    assert np.abs(out.astype(np.float64) - ref).max() <= 1.0  # 8-bit rounding of the compositing


def test_la_and_palette_transparency(tmp_path):
    la = np.dstack([np.full((40, 40), 10, np.uint8), np.zeros((40, 40), np.uint8)])
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), 255)  # fully transparent -> white

    pal = Image.new("P", (40, 40), 0)
    pal.putpalette([200, 10, 10, 10, 200, 10] + [0] * 762)
    pal.paste(1, (0, 0, 20, 40))
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png", transparency=0)
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out[:, :20], np.broadcast_to([10, 200, 10], (40, 20, 3)))
    np.testing.assert_array_equal(out[:, 20:], 255)


def test_matches_ref_16bit(tmp_path):
    values = np.random.default_rng(2).integers(0, 65536, (40, 50)).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    ref = np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5)
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], ref)
    np.testing.assert_array_equal(out[..., 1], out[..., 2])


def test_cmyk(tmp_path):
    Image.fromarray(rgb_image()).convert("CMYK").save(tmp_path / "c.jpg")
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8


def test_exif_orientation(tmp_path):
    arr = rgb_image(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (60, 40, 3)
    stored = read_image(tmp_path / "r.jpg", exif_orientation=False)  # dataset readers: labels match storage
    assert stored.shape == (40, 60, 3)
    np.testing.assert_array_equal(np.rot90(stored, -1), out)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_bytes(os.urandom(500)), "not an image"),
        (lambda p: p.write_text("hello, not a picture"), "not an image"),
        (lambda p: Image.fromarray(rgb_image(5, 5)).save(p, format="PNG"), "too small"),
        (lambda p: Image.fromarray(rgb_image(300, 400)).save(p, format="PNG"), "too large"),
    ],
)
def test_exception(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageReadError, match=reason):
        read_image(path, max_pixels=100_000, min_side=16)


def test_exception_truncated(tmp_path):
    Image.fromarray(rgb_image(200, 200)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(tmp_path / "cut.jpg")


def test_exception_unreadable(tmp_path):
    path = tmp_path / "locked.png"
    Image.fromarray(rgb_image()).save(path)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: a chmod 000 file stays readable")
        with pytest.raises(ImageReadError, match="permission denied"):
            read_image(path)
    finally:
        path.chmod(0o644)


def test_huge_header_not_decoded(tmp_path):
    """A decompression bomb (large size, small file) is refused from its header, with our message."""
    Image.new("L", (12000, 12000)).save(tmp_path / "bomb.png")  # 144 MP, a few hundred kB
    with pytest.raises(ImageReadError, match="too large: 12000x12000"):
        read_image(tmp_path / "bomb.png")
