"""``diffcut-gpu segment``: outputs, agreement with the Python API, bad inputs, batch fallback, resume."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffcut_gpu.cli import main
from diffcut_gpu.io import MANIFEST_DIR, read_manifest
from tests.cli.helpers import TINY_RES, photo, tiny_args, write_photos

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DINOV2 = SHARED / "models" / "dinov2-small"


def summary(out: Path) -> dict:
    return json.loads((out / MANIFEST_DIR / "summary.json").read_text())


def labels_png(path: Path) -> np.ndarray:
    img = Image.open(path)
    assert img.mode.startswith("I"), f"{path}: expected a 16-bit label PNG, got mode {img.mode}"
    return np.asarray(img)


def test_smoke(tmp_path, tiny_vit):
    src = tmp_path / "in"
    write_photos(src, ["b.png", "a.jpg", "sub/c.png"], sizes=[(60, 80), (72, 50), (64, 64)])
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "-r", *tiny_args(tiny_vit, "-b", "2")]) == 0
    for key, (h, w) in {"a": (72, 50), "b": (60, 80), "sub/c": (64, 64)}.items():
        lab = labels_png(out / f"{key}.labels.png")
        assert lab.shape == (h, w)
        overlay = Image.open(out / f"{key}.overlay.png")
        assert overlay.format == "PNG" and overlay.mode == "RGB" and overlay.size == (w, h)
        record = json.loads((out / f"{key}.json").read_text())
        assert record["key"] == key and record["image_size"] == [h, w]
        assert record["processing_size"] == [int(TINY_RES)] * 2 and record["token_grid"] == [6, 6]
        assert record["num_segments"] >= len(np.unique(lab)) >= 1
        assert record["options"]["backbone"] == "vit" and record["options"]["threshold"] == "dynamic"
        assert record["tree"][0]["parent"] == -1 and record["tree"][0]["size"] == 36
        assert not (out / f"{key}.labels.npy").exists()  # not among the default formats
    s = summary(out)
    assert (s["inputs"], s["done"], s["skipped"], s["failed"], s["exit_code"]) == (3, 3, 0, 0, 0)
    assert s["complete"]
    assert not [p for p in out.rglob("*.tmp")]


def test_matches_ref(tmp_path, tiny_vit):
    """The written labels are the Python API's labels of the processed image, upsampled to the image size."""
    from diffcut_gpu import DiffCut

    src = tmp_path / "in"
    paths = write_photos(src, ["x.png", "y.png"], sizes=[(50, 70), (90, 60)])
    out = tmp_path / "out"
    opts = ["--threshold", "otsu", "--power", "2", "--upsample", "nearest", "--formats", "npy,json"]
    assert main(["segment", str(src), "--out", str(out), *tiny_args(tiny_vit, *opts)]) == 0
    model = DiffCut.from_pretrained(tiny_vit, backbone="vit", threshold="otsu", power=2, upsample="nearest",
                                    backbone_kwargs={"token_budget": None})
    res = int(TINY_RES)
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        x = torch.from_numpy(rgb.astype(np.float64) / 255).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(res, res), mode="bilinear", antialias=True, align_corners=False)
        x = x.clamp(0, 1)
        ref = model(x, output_size=rgb.shape[:2]).labels[0].numpy()
        assert ref.max() >= 1  # several segments, so that misplaced boundaries would show
        got = np.load(out / f"{path.stem}.labels.npy")
        np.testing.assert_array_equal(got, ref)
        assert not (out / f"{path.stem}.overlay.png").exists()


def make_bad_folder(root: Path) -> dict[str, str]:
    """Good images (several awkward but valid kinds) and bad ones; returns {bad name: expected reason}."""
    write_photos(root, ["good1.png", "good2.jpg"])
    rgb = photo(7, (48, 64))
    Image.fromarray(rgb[..., 0], mode="L").save(root / "gray.png")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(root / "gray16.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(root / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(photo(8, (200, 200))).save(root / "full.jpg", quality=95)
    data = (root / "full.jpg").read_bytes()
    (root / "full.jpg").unlink()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "random.png").write_bytes(np.random.default_rng(0).bytes(700))
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(photo(9, (5, 5))).save(root / "tiny.png")
    Image.fromarray(photo(10, (400, 300))).save(root / "huge.png")  # 120000 px, over --max-pixels below
    locked = root / "locked.png"
    Image.fromarray(rgb).save(locked)
    locked.chmod(0)
    bad = {
        "truncated.jpg": "truncated",
        "random.png": "not an image",
        "tiny.png": "too small",
        "huge.png": "too large",
    }
    if not os.access(locked, os.R_OK):  # root reads anything: then it is a good image
        bad["locked.png"] = "permission denied"
    return bad


def test_bad_inputs(tmp_path, tiny_vit):
    src = tmp_path / "in"
    src.mkdir()
    bad = make_bad_folder(src)
    out = tmp_path / "out"
    missing = str(tmp_path / "does-not-exist.png")
    try:
        code = main(["segment", str(src), missing, "--out", str(out), "--max-pixels", "100000",
                     *tiny_args(tiny_vit, "-b", "3")])
    finally:
        (src / "locked.png").chmod(0o644)
    assert code == 1
    s = summary(out)
    reasons = {Path(f["source"]).name: f["reason"] for f in s["failures"]}
    assert set(reasons) == set(bad) | {"does-not-exist.png"}
    for name, why in bad.items():
        assert why in reasons[name], (name, reasons[name])
    assert "no such file" in reasons["does-not-exist.png"]
    assert [Path(f["source"]).name for f in s["ignored_files"]] == ["notes.txt"]
    good = {"good1", "good2", "gray", "rgba", "gray16", "cmyk", "rotated"} | (
        set() if "locked.png" in bad else {"locked"}
    )
    for key in good:
        assert (out / f"{key}.labels.png").is_file(), key
    assert labels_png(out / "rotated.labels.png").shape == (64, 48)  # EXIF orientation applied
    assert (s["done"], s["failed"], s["ignored"], s["exit_code"]) == (len(good), len(bad) + 1, 1, 1)
    assert s["inputs"] == len(good) + len(bad)
    manifest = read_manifest(out)
    assert sorted(r["key"] for r in manifest if r["status"] == "done") == sorted(good)
    assert sorted(r["key"] for r in manifest if r["status"] == "failed") == sorted(Path(n).stem for n in bad)


class FlakyModel(torch.nn.Module):
    """Wraps a DiffCut: fails on every batch of more than one image, and on images whose mean is < 0.15."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.backbone = inner.backbone
        self.calls: list[int] = []

    def forward(self, images):
        self.calls.append(images.shape[0])
        if images.shape[0] > 1:
            raise RuntimeError("simulated out of memory")
        if float(images.mean()) < 0.15:
            raise RuntimeError("simulated kernel failure")
        return self.inner(images)


def test_batch_failure_falls_back_to_single_images(tmp_path, tiny_vit, monkeypatch, capsys):
    from diffcut_gpu.cli import segment

    src = tmp_path / "in"
    write_photos(src, [f"img{i}.png" for i in range(4)])
    Image.fromarray(np.full((60, 60, 3), 20, np.uint8)).save(src / "dark.png")
    real_load = segment.load_model
    models = []

    def flaky_load(args, device):
        models.append(FlakyModel(real_load(args, device)))
        return models[-1]

    monkeypatch.setattr(segment, "load_model", flaky_load)
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), *tiny_args(tiny_vit, "-b", "5")]) == 1
    s = summary(out)
    assert s["done"] == 4 and [Path(f["source"]).name for f in s["failures"]] == ["dark.png"]
    reason = s["failures"][0]["reason"]
    assert "model error" in reason and "simulated kernel failure" in reason
    assert models[0].calls == [5, 1, 1, 1, 1, 1]
    assert "retrying one image at a time" in capsys.readouterr().err


def test_resume(tmp_path, tiny_vit):
    src = tmp_path / "in"
    write_photos(src, [f"img{i}.png" for i in range(4)])
    out = tmp_path / "out"
    args = ["segment", str(src), "--out", str(out), *tiny_args(tiny_vit, "-b", "2")]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in out.glob("img*")}
    (out / "img2.labels.png").unlink()
    (out / MANIFEST_DIR / ".rank-0.jsonl.abc.tmp").write_text("left by a killed writer")
    assert main(args) == 0
    s = summary(out)
    assert (s["done"], s["skipped"], s["failed"]) == (1, 3, 0)
    assert (out / "img2.labels.png").is_file() and not list(out.rglob("*.tmp"))
    for p, mtime in before.items():
        if not p.name.startswith("img2."):
            assert p.stat().st_mtime_ns == mtime, f"{p.name} was rewritten"
    done = [r["key"] for r in read_manifest(out) if r["status"] == "done"]
    assert sorted(done) == ["img0", "img1", "img2", "img2", "img3"]

    assert main(args) == 0  # nothing left: the model is not even loaded
    assert (summary(out)["done"], summary(out)["skipped"]) == (0, 4)

    assert main([*args, "--overwrite"]) == 0
    assert (summary(out)["done"], summary(out)["skipped"]) == (4, 0)
    done = [r["key"] for r in read_manifest(out) if r["status"] == "done"]
    assert sorted(done) == ["img0", "img1", "img2", "img3"]  # --overwrite starts a new manifest


def test_resume_recovers_missing_manifest_lines(tmp_path, tiny_vit):
    """Outputs complete but the manifest lost (killed between the two): no redo, lines are added back."""
    src = tmp_path / "in"
    write_photos(src, ["a.png", "b.png"])
    out = tmp_path / "out"
    args = ["segment", str(src), "--out", str(out), *tiny_args(tiny_vit)]
    assert main(args) == 0
    shutil.rmtree(out / MANIFEST_DIR)
    assert main(args) == 0
    assert summary(out)["skipped"] == 2
    records = read_manifest(out)
    assert sorted(r["key"] for r in records) == ["a", "b"] and all(r["recovered"] for r in records)


def test_formats_and_short_side(tmp_path, tiny_vit):
    src = tmp_path / "in"
    write_photos(src, ["wide.png", "tall.png"], sizes=[(56, 112), (112, 56)])
    out = tmp_path / "out"
    opts = ["--formats", "npy,png16", "--resize", "short", "--resolution", "56", "-b", "2"]
    assert main(["segment", str(src), "--out", str(out), *tiny_args(tiny_vit), *opts]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "tall.labels.npy", "tall.labels.png", "wide.labels.npy", "wide.labels.png",
    ]
    np.testing.assert_array_equal(np.load(out / "wide.labels.npy"), labels_png(out / "wide.labels.png"))
    assert np.load(out / "tall.labels.npy").shape == (112, 56)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "often"], "--threshold"),
        (["--formats", "gif"], "--formats"),
        (["--batch-size", "0"], "--batch-size"),
        (["--backbone", "cnn"], "--backbone"),
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_exception_usage(tmp_path, tiny_vit, capsys, extra, message):
    write_photos(tmp_path / "in", ["a.png"])
    args = ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), *tiny_args(tiny_vit), *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_exception_setup(tmp_path, tiny_vit, capsys):
    write_photos(tmp_path / "in", ["a.png"])
    src, out = str(tmp_path / "in"), str(tmp_path / "out")
    base = ["--backbone", "vit", "--device", "cpu", "--quiet"]
    assert main(["segment", src, "--out", out, *base, "--model-path", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err
    assert "--model-path" in err and "no-model" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main(["segment", str(tmp_path / "empty"), "--out", out, *tiny_args(tiny_vit)]) == 2
    assert "no images" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["segment", src, "--out", str(tmp_path / "file"), *tiny_args(tiny_vit)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["segment", src, "--out", out, *tiny_args(tiny_vit, "--threshold", "-1")]) == 2


def test_exception_diffusion_model_missing(tmp_path, capsys):
    pytest.importorskip("diffusers")
    write_photos(tmp_path / "in", ["a.png"])
    args = ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet",
            "--model-path", str(tmp_path / "SSD-1B")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "SSD-1B" in err and "--model-path" in err and "HF_HUB_OFFLINE=1" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "a.labels.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (DINOV2 / "config.json").is_file(), reason=f"no weights at {DINOV2}")
def test_real_dinov2(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    src = tmp_path / "in"
    src.mkdir()
    sizes = {}
    for name in ("astronaut", "chelsea"):
        rgb = getattr(skimage_data, name)()
        Image.fromarray(rgb).save(src / f"{name}.png")
        sizes[name] = rgb.shape[:2]
    out = tmp_path / "out"
    args = ["segment", str(src), "--out", str(out), "--backbone", "vit", "--model-path", str(DINOV2),
            "--resolution", "224", "--device", "cpu", "--batch-size", "2", "--quiet"]
    assert main(args) == 0
    for name, (h, w) in sizes.items():
        overlay = Image.open(out / f"{name}.overlay.png")
        overlay.verify()  # a valid PNG
        assert Image.open(out / f"{name}.overlay.png").size == (w, h)
        lab = labels_png(out / f"{name}.labels.png")
        record = json.loads((out / f"{name}.json").read_text())
        assert lab.shape == (h, w) and record["token_grid"] == [16, 16]
        assert 2 <= record["num_segments"] <= 64 and len(np.unique(lab)) >= 2  # a real photo has segments
