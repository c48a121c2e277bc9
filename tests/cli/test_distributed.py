"""torchrun scale-out: sharding, same outputs as one process, a rank killed midway then resumed."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch

from diffcut_gpu.cli.distributed import DistContext, env_world_size, init_distributed, resolve_device, shard
from diffcut_gpu.cli.pipeline import FAIL_AFTER_ENV, FAIL_RANK_ENV
from diffcut_gpu.cli.summary import summary_path
from diffcut_gpu.io import read_manifest
from tests.cli.helpers import tiny_args, write_photos

NAMES = [f"img{i}.png" for i in range(5)] + ["sub/img5.png"]
KEYS = sorted(n.removesuffix(".png") for n in NAMES)


def torchrun(nproc: int, args: list[str], **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m diffcut_gpu segment ARGS``: CPU, gloo, 1 thread each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "diffcut_gpu", "segment", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", FAIL_AFTER_ENV, FAIL_RANK_ENV):
        if key not in env:
            full_env.pop(key, None)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300)


def single(args: list[str]) -> int:
    """The same command as one plain process with one thread (as each torchrun worker has).

    A subprocess, not ``torch.set_num_threads(1)`` in this one: changing the thread count back and forth
    inside a process has made later batched LU solves of this torch build fail ("Pivots given to
    lu_solve must all be greater or equal to 1") in the tests that run after.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "diffcut_gpu", "segment", *args]
    return subprocess.run(cmd, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300).returncode


def label_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.labels.png"))}


def test_shard():
    items = list(range(10))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(i for p in parts for i in p) == items
    with pytest.raises(ValueError, match="rank: expected 0 <= rank < world_size"):
        shard(items, 3, 3)


def test_single_process_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = init_distributed("cpu")
    assert (dist.rank, dist.world_size, dist.enabled, dist.device) == (0, 1, False, torch.device("cpu"))
    assert dist.all_gather({"a": 1}) == [{"a": 1}]
    dist.barrier()
    dist.check_same("inputs", ["x"])
    dist.close()
    assert DistContext().is_main


def test_all_gather_through_store():
    """Two ranks (threads) sharing one store: each gather returns every rank's object in rank order, and
    consecutive gathers do not read each other's keys."""
    store = torch.distributed.HashStore()
    results: dict[int, list] = {}

    def rank_main(rank: int) -> None:
        ctx = DistContext(rank=rank, world_size=2, backend="gloo", store=store)
        first = ctx.all_gather({"rank": rank})
        second = ctx.all_gather(f"round2-{rank}")
        ctx.check_same("inputs", ["a", "b"])
        results[rank] = [first, second]

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in (1, 0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    expected = [[{"rank": 0}, {"rank": 1}], ["round2-0", "round2-1"]]
    assert results == {0: expected, 1: expected}

    lonely = DistContext(rank=0, world_size=2, backend="gloo", store=torch.distributed.HashStore())
    lonely.store.set("gather/1/1", pickle.dumps("0" * 40))  # rank 1's digest of another input list
    with pytest.raises(RuntimeError, match="expected every rank to see the same list"):
        lonely.check_same("inputs", ["a"])


def test_exception(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE: expected an integer"):
        env_world_size()
    with pytest.raises(ValueError, match="--device: expected"):
        resolve_device("tpu:x")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_vit):
    src = tmp_path / "in"
    write_photos(src, NAMES)
    ref, out = tmp_path / "ref", tmp_path / "out"
    common = tiny_args(tiny_vit, "-r", "-b", "2")
    assert single([str(src), "--out", str(ref), *common]) == 0
    run = torchrun(2, [str(src), "--out", str(out), *common])
    assert run.returncode == 0, run.stderr[-3000:]
    assert label_bytes(out) == label_bytes(ref) and len(label_bytes(ref)) == len(NAMES)
    s = json.loads(summary_path(out).read_text())
    assert (s["world_size"], s["done"], s["failed"]) == (2, len(NAMES), 0)
    assert [r["done"] for r in s["per_rank"]] == [3, 3]
    records = read_manifest(out)
    assert sorted(r["key"] for r in records) == KEYS
    by_rank = {r["key"]: r["rank"] for r in records}
    assert [by_rank[k] for k in KEYS] == [0, 1, 0, 1, 0, 1]  # round-robin over the sorted keys


@pytest.mark.slow
def test_killed_rank_then_resume_with_other_world_size(tmp_path, tiny_vit):
    src = tmp_path / "in"
    write_photos(src, NAMES)
    out = tmp_path / "out"
    common = tiny_args(tiny_vit, "-r", "-b", "1")
    run = torchrun(2, [str(src), "--out", str(out), *common], **{FAIL_AFTER_ENV: "1", FAIL_RANK_ENV: "1"})
    assert run.returncode != 0, "the killed rank must fail the job"
    first = [r["key"] for r in read_manifest(out) if r["status"] == "done"]
    assert 1 <= len(first) < len(NAMES)  # rank 1 did one image before dying; the job is incomplete
    assert not summary_path(out).exists()

    assert single([str(src), "--out", str(out), *common]) == 0  # resume with one process
    s = json.loads(summary_path(out).read_text())
    assert (s["skipped"], s["done"], s["failed"]) == (len(first), len(NAMES) - len(first), 0)
    assert s["complete"]
    done = Counter(r["key"] for r in read_manifest(out) if r["status"] == "done")
    assert sorted(done) == KEYS and set(done.values()) == {1}  # every image exactly once
    for key in KEYS:
        for suffix in (".overlay.png", ".labels.png", ".json"):
            assert (out / f"{key}{suffix}").is_file(), key + suffix
    assert not list(out.rglob("*.tmp"))
