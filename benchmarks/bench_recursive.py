"""Whole recursive segmentation: batched level-synchronous NCut vs a DiffCut-style recursion.

Same inputs for both: B attention-like maps on an h x w token grid (planted regions), reversibilized.
DiffCut-style = one image and one node at a time, dense eigh per node, 100 thresholds each read back
to the host. Reports time per batch, speed-up, segments, and the NCut of the splits each kept (ours
must be equal or lower at the root, where both cut the same graph).

    python -m benchmarks.bench_recursive              # B=8 and 32, 32x32 tokens (CPU: a few minutes)
    python -m benchmarks.bench_recursive --threads 1  # the same on one CPU thread (its own JSON)
    python -m benchmarks.bench_recursive --quick      # seconds
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import environment, markdown_table, region_attention, time_it, write_json
from diffcut_gpu import recursive_ncut, reversibilize
from diffcut_gpu.baselines import diffcut_style_ncut


def run(batch: int, grid: int, tau: float, min_size: int, device: str, repeats: int) -> dict:
    P = region_attention(batch, grid, grid, seed=0, device=device)
    W = reversibilize(P).float()

    ours = recursive_ncut(W, threshold=tau, min_size=min_size)
    theirs = [diffcut_style_ncut(W[b], tau=tau, min_size=min_size, max_depth=8) for b in range(batch)]
    root_ours = ours.ncut[:batch].tolist()  # node b is the root of image b
    root_theirs = []
    for b in range(batch):
        kept = theirs[b][1]
        # DiffCut's first kept split is its root split; when it kept none, its root NCut is >= tau.
        root_theirs.append(kept[0] if kept else float("nan"))
    root_ok = all(
        o <= t + 1e-5 for o, t in zip(root_ours, root_theirs) if t == t  # NaN: baseline kept no split
    )

    t_ours = time_it(lambda: recursive_ncut(W, threshold=tau, min_size=min_size), device=device, repeats=repeats)
    t_theirs = time_it(
        lambda: [diffcut_style_ncut(W[b], tau=tau, min_size=min_size, max_depth=8) for b in range(batch)],
        device=device, warmup=0, repeats=max(1, repeats // 2),
    )
    kept_ours = ours.ncut[(ours.children[:, 0] >= 0)]
    found = [t for t in root_theirs if t == t]  # NaN: the baseline kept no split
    kept_theirs = [v for _, k in theirs for v in k]
    return {
        "batch": batch,
        "tokens": f"{grid}x{grid}",
        "tau": tau,
        "ours_s": t_ours["median_s"],
        "diffcut_style_s": t_theirs["median_s"],
        "speedup": t_theirs["median_s"] / t_ours["median_s"],
        "ours_min_s": t_ours["min_s"],
        "diffcut_style_min_s": t_theirs["min_s"],
        "repeats": [t_ours["repeats"], t_theirs["repeats"]],
        "threads": torch.get_num_threads(),
        "ours_segments_mean": float(ours.num_segments.float().mean()),
        "diffcut_style_segments_mean": sum(int(l.max()) + 1 for l, _ in theirs) / batch,
        "ours_root_ncut_mean": sum(root_ours) / batch,
        "diffcut_style_root_ncut_mean": sum(found) / max(1, len(found)),
        "root_ncut_ours_le_theirs": root_ok,
        "ours_kept_ncut_mean": float(kept_ours.mean()) if kept_ours.numel() else float("nan"),
        "diffcut_style_kept_ncut_mean": sum(kept_theirs) / max(1, len(kept_theirs)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--min-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    configs = [(4, 16)] if args.quick else [(8, 32), (32, 32)]
    rows = [run(b, g, args.tau, args.min_size, args.device, repeats=3 if args.quick else 7) for b, g in configs]
    cols = ["batch", "tokens", "ours_s", "diffcut_style_s", "speedup", "ours_segments_mean",
            "diffcut_style_segments_mean", "ours_root_ncut_mean", "diffcut_style_root_ncut_mean",
            "root_ncut_ours_le_theirs"]
    print(markdown_table(rows, cols))
    if not args.quick:
        name = "bench_recursive.json" if args.threads is None else f"bench_recursive_{args.threads}thread.json"
        path = write_json(name, {"environment": environment(args.device), "results": rows})
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
