"""CPU thread policy: the spectral stage runs on one thread, the backbone on a chosen count.

The spectral stage (graph build, recursive cuts, upsampling) is thousands of small tensor operations
(per-node sub-graphs, Lanczos steps on a few vectors, sweeps): each is too small for a thread pool to
pay off, and each parallel region wakes every pool thread. When the cores are busy with other work, a
woken thread waits for a core, so every small operation waits for the slowest thread: the recursion ran
up to 9x slower at torch's default thread count than on one thread on a busy 2-core machine
(docs/benchmarks.md). ``single_threaded`` runs such a stage on one thread and restores the count after.

``auto_threads`` is the count the CLI picks for the rest (the backbone's large matrix products): the
CPUs this process may run on, less the ones other work keeps busy (the 1-minute load average), at least 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["auto_threads", "set_threads", "single_threaded"]


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one torch intra-op thread; the previous count is restored afterwards.

    Nothing is changed when the count is already 1 (set_num_threads is not free, and on this torch build
    any call to it breaks MKL's batched LU of large matrices: ``stationary_distribution`` solves one
    matrix at a time for that reason).
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def auto_threads() -> int:
    """Intra-op threads for the backbone: available CPUs less the busy ones (1-minute load), at least 1,
    and never more than torch's own default (physical cores)."""
    cpus = available_cpus()
    try:
        busy = math.floor(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        busy = 0
    return max(1, min(cpus - busy, torch.get_num_threads()))


def set_threads(count: int | None) -> int:
    """Set torch's intra-op threads to ``count`` (None: ``auto_threads()``); returns the count set."""
    count = auto_threads() if count is None else count
    if count < 1:
        raise ValueError(f"threads: expected a positive count, got {count}")
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return count
