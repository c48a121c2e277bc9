"""Host synchronisations and CPU time of ``recursive_ncut``: the previous implementation against this one.

Same inputs for both (B region-attention maps of 32 x 32 tokens, reversibilized, float32, constant
tau), one CPU thread, process CPU time (the machine is shared). "before" is the package at git revision
``--before`` (extracted with ``git archive`` into a temporary folder and run in a subprocess, so the two
versions never share an interpreter); "after" is the working tree. Syncs are counted in one more call
with ``benchmarks.syncs.SyncCounter``; for "after" also under the ``"device"`` sync policy that GPUs use.

    python -m benchmarks.bench_syncs                        # B = 8 and 32 (several minutes on CPU)
    python -m benchmarks.bench_syncs --batches 8 --repeats 1 --before cb8c975
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import environment, markdown_table, region_attention, write_json
from benchmarks.syncs import SyncCounter

REPO = Path(__file__).resolve().parents[1]
BEFORE = "cb8c975"
"""The last commit before the device-resident recursion (issue 10)."""


def worker(batch: int, repeats: int, tau: float, device_policy: bool) -> dict:
    """Runs in the subprocess: time and count one configuration with whatever ``diffcut_gpu`` imports."""
    torch.set_num_threads(1)
    from diffcut_gpu import recursive_ncut, reversibilize

    W = reversibilize(region_attention(batch, 32, 32, seed=0)).float()
    recursive_ncut(W, threshold=tau)  # warm caches
    times = []
    for _ in range(repeats):
        start = time.process_time()
        seg = recursive_ncut(W, threshold=tau)
        times.append(time.process_time() - start)
    with SyncCounter() as counter:
        recursive_ncut(W, threshold=tau)
    out = {
        "batch": batch,
        "min_s": min(times),
        "times_s": times,
        "syncs": counter.total,
        "syncs_by_op": dict(counter.counts),
        "levels": int(seg.level.max()) + 1,
        "segments_mean": float(seg.num_segments.float().mean()),
        "labels_sum": int(seg.labels.sum()),
    }
    if device_policy:
        from diffcut_gpu._types import LanczosParams

        with SyncCounter() as counter:
            # What a GPU runs: the torch twins (the CPU's ARPACK slot reads the host by design).
            dev = recursive_ncut(W, threshold=tau, params=LanczosParams(sync="device"), backend="torch")
        out["device_policy_syncs"] = counter.total
        out["device_policy_same_labels"] = bool(torch.equal(dev.labels, seg.labels))
    return out


def _run(cwd: Path, batch: int, repeats: int, tau: float, device_policy: bool) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_syncs", "--worker", "--batches", str(batch),
           "--repeats", str(repeats), "--tau", str(tau)] + (["--device-policy"] if device_policy else [])
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker in {cwd} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--before", default=BEFORE, help="git revision of the previous implementation")
    parser.add_argument("--device-policy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.batches[0], args.repeats, args.tau, args.device_policy)))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", args.before, "diffcut_gpu"], cwd=REPO, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        for batch in args.batches:
            before = _run(Path(tmp), batch, args.repeats, args.tau, False)
            after = _run(REPO, batch, args.repeats, args.tau, True)
            rows.append({
                "batch": batch,
                "before_s": before["min_s"],
                "after_s": after["min_s"],
                "before_syncs": before["syncs"],
                "after_syncs": after["syncs"],
                "after_device_policy_syncs": after["device_policy_syncs"],
                "levels": after["levels"],
                "same_labels": before["labels_sum"] == after["labels_sum"] and after["device_policy_same_labels"],
                "before": before,
                "after": after,
            })
            print(f"B={batch}: before {before['min_s']:.3f} s, {before['syncs']} syncs; after {after['min_s']:.3f} s, "
                  f"{after['syncs']} syncs (device policy {after['device_policy_syncs']})", flush=True)
    payload = {"environment": environment("cpu"), "before_revision": args.before, "tokens": "32x32",
               "tau": args.tau, "threads": 1, "rows": rows}
    path = write_json("bench_syncs.json", payload)
    print(markdown_table(rows, ["batch", "before_s", "after_s", "before_syncs", "after_syncs",
                                "after_device_policy_syncs", "levels", "same_labels"]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
