"""The end-of-run summary: counts over all ranks, every failure with its reason, exit code.

Written by rank 0 as ``<out>/.manifest/summary.json`` (atomically; the run folder holds no image
outputs, so an input called ``summary.jpg`` keeps its own ``summary.json``) and printed to stderr.

Exit codes of every sub-command (one place; ``eval`` and ``bench`` import them): `EXIT_OK` (0) every
input done; `EXIT_FAILED` (1) some inputs failed, or a run-level file (manifest, summary) could not be
written: finished outputs are kept either way; `EXIT_USAGE` (2) a usage or setup error, nothing done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..io import MANIFEST_DIR, atomic_write_bytes
from .pipeline import RankStats

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "SUMMARY_NAME",
    "build_summary",
    "print_summary",
    "summary_path",
    "write_summary",
]

SUMMARY_NAME = "summary.json"

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
    run_errors = [e for r in ranks for e in r.run_errors]
    done = sum(r.done for r in ranks)
    busy = max((r.seconds for r in ranks), default=0.0)
    processed = done + sum(len(r.failed) for r in ranks)
    return {
        "exit_code": EXIT_FAILED if failed or run_errors else EXIT_OK,
        "inputs": total,
        "done": done,
        "skipped": skipped,
        "failed": len(failed),
        "ignored": len(ignored),
        "complete": done + skipped == total and not failed,
        "failures": failed,
        "run_errors": run_errors,
        "ignored_files": [{"source": p, "reason": why} for p, why in ignored],
        "out_dir": str(Path(out_dir).resolve()),
        "world_size": len(ranks),
        "per_rank": [{"rank": r.rank, "done": r.done, "failed": len(r.failed), "seconds": round(r.seconds, 3)}
                     for r in ranks],
        "seconds": round(elapsed, 3),
        "images_per_second": round(processed / busy, 4) if busy > 0 else None,
        "options": options,
    }


def summary_path(out_dir: str | Path) -> Path:
    """``<out>/.manifest/summary.json``: in the run folder, where no input's outputs can be."""
    return Path(out_dir) / MANIFEST_DIR / SUMMARY_NAME


def write_summary(summary: dict, out_dir: str) -> Path | None:
    """Write the summary; on failure (no space, read-only folder) add the reason to ``run_errors``, set
    the exit code to `EXIT_FAILED` and return ``None`` instead of raising (the outputs stay as they are)."""
    path = summary_path(out_dir)
    try:
        atomic_write_bytes(path, (json.dumps(summary, indent=1) + "\n").encode("utf-8"))
    except OSError as err:
        summary["run_errors"].append(f"could not write the summary {path} ({err.strerror or err})")
        summary["exit_code"] = EXIT_FAILED
        return None
    return path


def print_summary(summary: dict, path: Path | None, file=None) -> None:
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
    for e in summary["run_errors"]:
        print(f"  error: {e}", file=file)
    where = f"summary in {path}" if path is not None else "no summary file (see the error above)"
    print(f"outputs in {summary['out_dir']}; {where}", file=file)
