"""Append-only JSONL manifest of finished and failed images, one file per writer (rank).

``<out>/.manifest/rank-<r>.jsonl`` gets one line per image each time rank ``r`` finishes or fails it:

    {"key": "x/cat", "source": "photos/x/cat.jpg", "status": "done", "rank": 0, "run": "...", "time": ...}
    {"key": "dog", "source": "photos/dog.png", "status": "failed", "reason": "corrupt ...", ...}

A line is written only after the image's outputs are in place, then flushed and fsynced, so a killed
job never has a "done" line without outputs. A job killed while writing leaves at most one partial last
line, which `read_manifest` skips. Rank ``r`` of any run appends to ``rank-<r>.jsonl``; two runs must
not share an output folder at the same time.

``<out>/.manifest/`` is the one folder of run-level files (the manifest and ``summary.json``): no input
can get an output there (`discover_inputs` keeps keys out of it), so a run never overwrites an image's
outputs with its own files, whatever the images are called.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO

__all__ = ["MANIFEST_DIR", "Manifest", "read_manifest"]

#: Folder (under the output folder) of the run-level files: ``rank-<r>.jsonl`` and ``summary.json``.
MANIFEST_DIR = ".manifest"


class Manifest:
    """Appends JSON lines to ``<out_dir>/.manifest/rank-<rank>.jsonl``, each flushed and fsynced.

    Example:
        >>> with Manifest("outputs", rank=0) as m:         # doctest: +SKIP
        ...     m.append({"key": "cat", "status": "done"})
    """

    def __init__(self, out_dir: str | os.PathLike, rank: int = 0, *, fsync: bool = True) -> None:
        if not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank: expected a non-negative int, got {rank!r}")
        self.path = Path(out_dir) / MANIFEST_DIR / f"rank-{rank}.jsonl"
        self.fsync = fsync
        self._fh: IO[str] | None = None
        #: The first write failure of `try_append` (``None`` while every line was written).
        self.error: str | None = None

    def append(self, record: dict) -> None:
        """Write ``record`` as one line and make it durable before returning."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # kept open between appends
            if self._fh.tell() > 0:  # a previous run killed mid-line: start on a fresh line
                with open(self.path, "rb") as check:
                    check.seek(-1, os.SEEK_END)
                    if check.read(1) != b"\n":
                        self._fh.write("\n")
        self._fh.write(json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def try_append(self, record: dict) -> bool:
        """`append`, but a failed write (no space, read-only folder ...) is kept in ``self.error`` instead
        of raised, and later lines are skipped: a manifest failure must not stop the images. A resumed
        run re-checks outputs, so lost lines only cost the ``"recovered"`` lines it then adds."""
        if self.error is not None:
            return False
        try:
            self.append(record)
        except OSError as err:
            self.error = f"could not write the manifest {self.path} ({err.strerror or err})"
            self.close()
            return False
        return True

    def close(self) -> None:
        if self._fh is not None:
            fh, self._fh = self._fh, None
            try:
                fh.close()
            except OSError as err:  # the last flush failed: same report as a failed append
                if self.error is None:
                    self.error = f"could not write the manifest {self.path} ({err.strerror or err})"

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(out_dir: str | os.PathLike) -> list[dict]:
    """Every complete line of every ``rank-*.jsonl`` in ``<out_dir>/.manifest`` (partial lines skipped)."""
    folder = Path(out_dir) / MANIFEST_DIR
    records = []
    for path in sorted(folder.glob("rank-*.jsonl")) if folder.is_dir() else []:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the tail of a killed write
                if isinstance(value, dict):
                    records.append(value)
    return records
