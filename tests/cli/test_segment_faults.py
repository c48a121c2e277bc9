"""``diffcut-gpu segment`` under faults: name clashes, full disks, damaged outputs, odd inputs and options."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from diffcut_gpu.cli import main
from diffcut_gpu.cli.summary import summary_path
from diffcut_gpu.io import Manifest, read_manifest
from tests.cli.helpers import tiny_args, write_photos


def _summary(out: Path) -> dict:
    return json.loads(summary_path(out).read_text())


def _run(src: Path, out: Path, model: Path, *extra: str) -> int:
    return main(["segment", str(src), "--out", str(out), *tiny_args(model, *extra)])


def test_input_named_summary_keeps_its_outputs(tmp_path, tiny_vit):
    """An image called summary.jpg owns summary.json; the run summary lives in the run folder."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_photos(src, ["summary.jpg", "a.png"])
    assert _run(src, out, tiny_vit) == 0
    record = json.loads((out / "summary.json").read_text())
    assert record["key"] == "summary" and "tree" in record
    assert _summary(out)["done"] == 2
    assert _run(src, out, tiny_vit) == 0
    assert (_summary(out)["skipped"], _summary(out)["done"]) == (2, 0)
    assert json.loads((out / "summary.json").read_text())["key"] == "summary"


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_manifest_write_failure_is_reported_and_images_go_on(tmp_path, tiny_vit, monkeypatch, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write_photos(src, ["a.png", "b.png", "c.png"])
    monkeypatch.setattr(Manifest, "append", _no_space)
    assert _run(src, out, tiny_vit) == 1
    err = capsys.readouterr().err
    assert "could not write the manifest" in err and "No space left" in err and "Traceback" not in err
    for key in "abc":
        assert (out / f"{key}.labels.png").is_file() and (out / f"{key}.json").is_file()
    s = _summary(out)
    assert s["done"] == 3 and s["exit_code"] == 1 and len(s["run_errors"]) == 1
    monkeypatch.undo()
    assert _run(src, out, tiny_vit) == 0  # resume trusts the outputs and adds the lost lines
    assert _summary(out)["skipped"] == 3
    assert sorted(r["key"] for r in read_manifest(out) if r.get("recovered")) == ["a", "b", "c"]


def test_summary_write_failure_is_reported(tmp_path, tiny_vit, monkeypatch, capsys):
    from diffcut_gpu.cli import summary

    src, out = tmp_path / "in", tmp_path / "out"
    write_photos(src, ["a.png"])
    monkeypatch.setattr(summary, "atomic_write_bytes", _no_space)
    assert _run(src, out, tiny_vit) == 1
    err = capsys.readouterr().err
    assert "could not write the summary" in err and "done 1" in err and "Traceback" not in err
    assert (out / "a.labels.png").is_file() and not summary_path(out).exists()


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_resume_redoes_damaged_outputs(tmp_path, tiny_vit, damage):
    src, out = tmp_path / "in", tmp_path / "out"
    write_photos(src, ["a.png", "b.png", "c.png"])
    args = ("--formats", "overlay,png16,npy,json")
    assert _run(src, out, tiny_vit, *args) == 0
    good = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for name in ("a.labels.png", "b.labels.npy", "c.json"):
        path = out / name
        path.write_bytes(b"" if damage == "empty" else good[name][: len(good[name]) // 2])
    assert _run(src, out, tiny_vit, *args) == 0
    s = _summary(out)
    assert (s["done"], s["skipped"]) == (3, 0)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == good


@pytest.mark.parametrize("recursive", [False, True])
def test_broken_symlink_is_reported(tmp_path, tiny_vit, recursive):
    src, out = tmp_path / "in", tmp_path / "out"
    write_photos(src, ["a.png"])
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    assert _run(src, out, tiny_vit, *(["-r"] if recursive else [])) == 1
    failures = {Path(f["source"]).name: f["reason"] for f in _summary(out)["failures"]}
    assert list(failures) == ["gone.png"] and "broken symbolic link" in failures["gone.png"]


def test_out_equal_to_or_around_the_input_folder(tmp_path, tiny_vit, capsys):
    src = tmp_path / "in"
    write_photos(src, ["a.png"])
    assert _run(src, src, tiny_vit) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "is the input folder" in err and "found no images" not in err
    assert _run(src, tmp_path, tiny_vit) == 2
    err = capsys.readouterr().err
    assert "lies inside the output folder" in err and "found no images" not in err


def test_limit_zero_is_a_usage_error(tmp_path, tiny_vit, capsys):
    write_photos(tmp_path / "in", ["a.png"])
    assert _run(tmp_path / "in", tmp_path / "out", tiny_vit, "--limit", "0") == 2
    err = capsys.readouterr().err
    assert "--limit" in err and "positive integer" in err and "found no images" not in err


def test_resolution_below_two_patches_is_a_usage_error(tmp_path, tiny_vit, capsys):
    write_photos(tmp_path / "in", ["a.png"])
    assert _run(tmp_path / "in", tmp_path / "out", tiny_vit, "--resolution", "20") == 2
    err = capsys.readouterr().err
    assert "--resolution" in err and "at least 28" in err and "nodes" not in err
    assert not (tmp_path / "out" / "a.labels.png").exists()


def test_vit_folder_as_diffusion_model_suggests_backbone_vit(tmp_path, tiny_vit, capsys):
    pytest.importorskip("diffusers")
    write_photos(tmp_path / "in", ["a.png"])
    args = ["segment", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu", "--quiet",
            "--model-path", str(tiny_vit)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--backbone vit" in err and "download" not in err and "Traceback" not in err
