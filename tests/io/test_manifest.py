"""Manifest: append-only JSONL per rank, durable lines, partial tails from killed writers skipped."""

from __future__ import annotations

import pytest

from diffcut_gpu.io import MANIFEST_DIR, Manifest, read_manifest


def test_smoke(tmp_path):
    with Manifest(tmp_path, rank=0) as m0, Manifest(tmp_path, rank=1) as m1:
        m0.append({"key": "a", "status": "done"})
        m1.append({"key": "b", "status": "failed", "reason": "corrupt"})
        m0.append({"key": "c", "status": "done"})
    assert sorted((tmp_path / MANIFEST_DIR).iterdir()) == [
        tmp_path / MANIFEST_DIR / "rank-0.jsonl",
        tmp_path / MANIFEST_DIR / "rank-1.jsonl",
    ]
    assert [r["key"] for r in read_manifest(tmp_path)] == ["a", "c", "b"]


def test_partial_line_is_skipped_and_next_append_starts_fresh(tmp_path):
    with Manifest(tmp_path, rank=0) as m:
        m.append({"key": "a", "status": "done"})
    path = tmp_path / MANIFEST_DIR / "rank-0.jsonl"
    with open(path, "a") as fh:
        fh.write('{"key": "b", "sta')  # a write cut short by a kill
    assert [r["key"] for r in read_manifest(tmp_path)] == ["a"]
    with Manifest(tmp_path, rank=0) as m:
        m.append({"key": "c", "status": "done"})
    assert [r["key"] for r in read_manifest(tmp_path)] == ["a", "c"]


def test_empty(tmp_path):
    assert read_manifest(tmp_path) == []


def test_exception(tmp_path):
    with pytest.raises(ValueError, match="rank: expected a non-negative int"):
        Manifest(tmp_path, rank=-1)


def test_try_append_keeps_the_first_failure(tmp_path, monkeypatch):
    import errno
    import os

    m = Manifest(tmp_path)
    assert m.try_append({"key": "a"}) and m.error is None
    calls = []

    def full(record):
        calls.append(record)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(m, "append", full)
    assert not m.try_append({"key": "b"}) and not m.try_append({"key": "c"})
    assert len(calls) == 1 and "No space left" in m.error and "rank-0.jsonl" in m.error
    m.close()
    assert [r["key"] for r in read_manifest(tmp_path)] == ["a"]
