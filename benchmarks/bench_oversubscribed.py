"""The recursion on a busy machine: torch's default threads vs one thread, with and without the policy.

Inputs: reversibilized DINOv2-S attention of 8 BSDS500 val images at 32 x 32 tokens
(``benchmarks.real_attention``), cut by ``RWNCut.segment`` (graph already built: ``source="attention"``
input, threshold 0.5) one image at a time, as the CLI does. Configurations, each timed in the same run:

* ``default threads, no policy``: torch's default thread count, the spectral stage run as before this
  change (the policy switched off);
* ``default threads, policy``: the same call with ``single_threaded`` in force (what users get now);
* ``1 thread``: ``torch.set_num_threads(1)`` for everything.

Each runs idle-ish (the machine as it is) and with ``--hogs`` extra busy-looping Python processes (2 by
default, one per core of this machine) started for the duration. Wall time and process CPU time, median
of repeats.

    python -m benchmarks.bench_oversubscribed          # -> docs/results/bench_oversubscribed.json
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.common import environment, markdown_table, write_json
from benchmarks.real_attention import real_attention
from diffcut_gpu import _threads
from diffcut_gpu.modules.rwncut import RWNCut


@contextlib.contextmanager
def hogs(count: int):
    """``count`` busy-looping processes for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


@contextlib.contextmanager
def no_policy():
    """The spectral stage at whatever thread count is set (the behaviour before the policy)."""
    original = _threads.torch.set_num_threads
    _threads.torch.set_num_threads = lambda n: None  # single_threaded becomes a no-op
    try:
        yield
    finally:
        _threads.torch.set_num_threads = original


def run_all(cut: RWNCut, P: torch.Tensor) -> None:
    for b in range(P.shape[0]):
        cut.segment(P[b : b + 1], (32, 32))


def measure(cut: RWNCut, P: torch.Tensor, repeats: int) -> dict:
    run_all(cut, P)  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        run_all(cut, P)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "wall_min_s": min(walls), "cpu_s": statistics.median(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    default = torch.get_num_threads()
    P = real_attention(32, 8)
    cut = RWNCut(source="attention", threshold=0.5)
    rows = []
    for load in (0, args.hogs):
        with hogs(load):
            configs = {}
            with no_policy():
                configs["default threads, no policy"] = measure(cut, P, args.repeats)
            configs["default threads, policy"] = measure(cut, P, args.repeats)
            torch.set_num_threads(1)
            configs["1 thread"] = measure(cut, P, args.repeats)
            torch.set_num_threads(default)
        one = configs["1 thread"]["wall_s"]
        for name, t in configs.items():
            rows.append({"hogs": load, "config": name, "threads": 1 if name == "1 thread" else default, **t,
                         "vs_1_thread": t["wall_s"] / one})
            print(rows[-1], flush=True)
    print(markdown_table(rows, ["hogs", "config", "threads", "wall_s", "wall_min_s", "cpu_s", "vs_1_thread"]))
    env = environment()
    env.update(images="8 BSDS500 val, 32x32 tokens, RWNCut.segment one image at a time, threshold 0.5",
               default_threads=default)
    print("wrote", write_json("bench_oversubscribed.json", {"environment": env, "rows": rows}))


if __name__ == "__main__":
    main()
