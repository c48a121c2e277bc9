"""Which images still need work, and which rank does each: resume by outputs, shard round-robin.

An image is *finished* when all of its requested output files exist and are whole (`outputs_complete`:
a PNG ends with its IEND chunk, a ``.npy`` has the bytes its header announces, a JSON file parses).
Each is written atomically, so a partial file only comes from elsewhere (a disk filled by another
writer, an interrupted copy); such an image is redone, not trusted. The plan, identical on every rank:

1. every rank checks the outputs of its round-robin slice of the sorted inputs (spreads the ``stat``s);
2. the slices' pending indices are gathered, giving the sorted list of unfinished images;
3. rank ``r`` of ``N`` processes ``pending[r::N]``.

Because the plan only looks at files, a job killed at any point resumes with any number of processes,
and no image is done twice. Finished images without a "done" manifest line (a kill between the last
output and the manifest write) get one, marked ``"recovered": true``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..io import MANIFEST_DIR, InputItem, Manifest, output_paths, outputs_complete, read_manifest
from .distributed import DistContext, shard

__all__ = ["Plan", "clean_temp_files", "plan_work"]


@dataclass
class Plan:
    """This rank's share of the unfinished images, and the totals every rank agrees on."""

    mine: list[InputItem]
    total: int
    pending: int
    skipped: int


def clean_temp_files(out_dir: str | os.PathLike) -> int:
    """Remove ``.*.tmp`` files left by killed writers under ``out_dir``; returns how many were removed."""
    removed = 0
    for root, _dirs, files in os.walk(out_dir):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except OSError:
                    pass
    return removed


def plan_work(
    items: list[InputItem],
    dist: DistContext,
    *,
    out_dir: str,
    formats: tuple[str, ...],
    overwrite: bool,
    manifest: Manifest,
    run_id: str,
) -> Plan:
    """Agree on the unfinished images across ranks and return this rank's share (see the module docstring).

    With ``overwrite`` every image is unfinished and rank 0 first deletes the old manifest. A recovered
    line that cannot be written is left in ``manifest.error`` (reported in the summary).
    """
    dist.check_same("inputs", [f"{it.key}\t{it.source}" for it in items])
    if dist.is_main:
        if overwrite:
            shutil.rmtree(Path(out_dir) / MANIFEST_DIR, ignore_errors=True)
        clean_temp_files(out_dir)
    dist.barrier()  # nobody writes before rank 0 has cleaned up

    indices = range(dist.rank, len(items), dist.world_size)
    if overwrite:
        local = list(indices)
    else:
        done = {r.get("key") for r in read_manifest(out_dir) if r.get("status") == "done"}
        local = []
        for i in indices:
            item = items[i]
            if not outputs_complete(output_paths(out_dir, item.key, formats)):
                local.append(i)
            elif item.key not in done:
                manifest.try_append({"key": item.key, "source": item.source, "status": "done", "rank": dist.rank,
                                 "run": run_id, "time": round(time.time(), 3), "recovered": True})
    pending = sorted(i for part in dist.all_gather(local) for i in part)
    mine = [items[i] for i in shard(pending, dist.rank, dist.world_size)]
    return Plan(mine=mine, total=len(items), pending=len(pending), skipped=len(items) - len(pending))
