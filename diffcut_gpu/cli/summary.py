"""The end-of-run summary: counts over all ranks, every failure with its reason, exit code.

Written by rank 0 as ``<out>/summary.json`` (atomically) and printed to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..io import atomic_write_bytes
from .pipeline import RankStats

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_summary", "print_summary", "write_summary"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_summary(
    ranks: list[RankStats],
    *,
    total: int,
    skipped: int,
    missing: list[tuple[str, str]],
    ignored: list[tuple[str, str]],
    out_dir: str,
    options: dict,
    elapsed: float,
) -> dict:
    """Merge the per-rank stats with the input-level problems (missing paths, ignored files)."""
    failed = [f for r in ranks for f in r.failed]
    failed += [{"source": path, "key": None, "reason": why} for path, why in missing]
    failed.sort(key=lambda f: f["source"])
    done = sum(r.done for r in ranks)
    busy = max((r.seconds for r in ranks), default=0.0)
    processed = done + sum(len(r.failed) for r in ranks)
    return {
        "exit_code": EXIT_FAILED if failed else EXIT_OK,
        "inputs": total,
        "done": done,
        "skipped": skipped,
        "failed": len(failed),
        "ignored": len(ignored),
        "complete": done + skipped == total and not failed,
        "failures": failed,
        "ignored_files": [{"source": p, "reason": why} for p, why in ignored],
        "out_dir": str(Path(out_dir).resolve()),
        "world_size": len(ranks),
        "per_rank": [{"rank": r.rank, "done": r.done, "failed": len(r.failed), "seconds": round(r.seconds, 3)}
                     for r in ranks],
        "seconds": round(elapsed, 3),
        "images_per_second": round(processed / busy, 4) if busy > 0 else None,
        "options": options,
    }


def write_summary(summary: dict, out_dir: str) -> Path:
    path = Path(out_dir) / "summary.json"
    atomic_write_bytes(path, (json.dumps(summary, indent=1) + "\n").encode("utf-8"))
    return path


def print_summary(summary: dict, path: Path, file=None) -> None:
    """A few human lines: counts, each failure with its reason, where the outputs are."""
    file = file or sys.stderr
    rate = summary["images_per_second"]
    speed = f" at {rate:.3g} images/s" if rate else ""
    print(
        f"done {summary['done']}, skipped {summary['skipped']} (already finished), "
        f"failed {summary['failed']}, "
        f"ignored {summary['ignored']} of {summary['inputs']} inputs in {summary['seconds']:.1f} s{speed} "
        f"on {summary['world_size']} process(es)",
        file=file,
    )
    for f in summary["failures"]:
        print(f"  failed: {f['source']}: {f['reason']}", file=file)
    for f in summary["ignored_files"]:
        print(f"  ignored: {f['source']}: {f['reason']}", file=file)
    print(f"outputs in {summary['out_dir']}; summary in {path}", file=file)
