"""discover_inputs: files, folders and globs to sorted, unique, stably keyed inputs."""

from __future__ import annotations

import pytest

from diffcut_gpu.io import discover_inputs


def touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_smoke(tmp_path):
    touch(tmp_path, "b.jpg", "a.png", "sub/c.jpeg")
    found = discover_inputs([tmp_path])
    assert [it.key for it in found.items] == ["a", "b"]  # not recursive: sub/ is not entered
    found = discover_inputs([tmp_path], recursive=True)
    assert [it.key for it in found.items] == ["a", "b", "sub/c"]
    assert found.missing == [] and found.ignored == []


def test_files_globs_and_limit(tmp_path):
    touch(tmp_path, "x/1.png", "x/2.png", "y/3.png", "z.png")
    found = discover_inputs([tmp_path / "z.png", str(tmp_path / "*" / "*.png")])
    assert [it.key for it in found.items] == ["x/1", "x/2", "y/3", "z"]  # glob keys relative to its root
    limited = discover_inputs([str(tmp_path / "*" / "*.png")], limit=2)
    assert [it.key for it in limited.items] == ["x/1", "x/2"]
    assert discover_inputs([tmp_path], recursive=True, limit=0).items == []


def test_same_file_twice_is_one_input(tmp_path):
    touch(tmp_path, "a.png")
    found = discover_inputs([tmp_path / "a.png", tmp_path, str(tmp_path / "*.png")])
    assert len(found.items) == 1


def test_key_collisions_are_disambiguated(tmp_path):
    touch(tmp_path, "cat.jpg", "cat.png", "dog.png")
    keys = [it.key for it in discover_inputs([tmp_path]).items]
    assert len(keys) == len(set(keys)) == 3
    assert "dog" in keys and all(k.startswith("cat-") and len(k) == 12 for k in keys if k != "dog")
    assert keys == [it.key for it in discover_inputs([tmp_path]).items]  # stable from run to run


def test_missing_and_ignored(tmp_path):
    touch(tmp_path, "a.png", "notes.txt", ".hidden.png", ".cache/b.png")
    found = discover_inputs([tmp_path, tmp_path / "nope.jpg", str(tmp_path / "*.gif")], recursive=True)
    assert [it.key for it in found.items] == ["a"]
    assert [(p.rsplit("/", 1)[-1], why) for p, why in found.missing] == [
        ("*.gif", "the pattern matched no files"),
        ("nope.jpg", "no such file or directory"),
    ]
    assert len(found.ignored) == 1 and found.ignored[0][0].endswith("notes.txt")
    assert "extension" in found.ignored[0][1]


def test_named_file_always_attempted(tmp_path):
    touch(tmp_path, "notes.txt")
    assert [it.key for it in discover_inputs([tmp_path / "notes.txt"]).items] == ["notes"]


def test_out_dir_inside_input_is_skipped(tmp_path):
    touch(tmp_path, "a.png", "out/a.overlay.png")
    found = discover_inputs([tmp_path], recursive=True, out_dir=tmp_path / "out")
    assert [it.key for it in found.items] == ["a"]


def test_exception():
    with pytest.raises(ValueError, match="limit: expected a non-negative"):
        discover_inputs(["."], limit=-1)


@pytest.mark.parametrize("recursive", [False, True])
def test_broken_symlink_is_kept_to_be_reported(tmp_path, recursive):
    touch(tmp_path, "a.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    found = discover_inputs([tmp_path], recursive=recursive)
    assert [it.key for it in found.items] == ["a", "gone"]


def test_key_never_lands_in_the_run_folder(tmp_path):
    touch(tmp_path, ".manifest/summary.png", "x/.manifest/b.png")
    found = discover_inputs([str(tmp_path / ".*" / "*.png"), str(tmp_path / "x" / ".*" / "*.png")])
    assert sorted(it.key for it in found.items) == ["_.manifest/b", "_.manifest/summary"]
