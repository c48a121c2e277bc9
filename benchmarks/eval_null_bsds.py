"""BSDS500 scores of the null-model default against the previous default, from the backbone cache.

    python -m benchmarks.eval_null_bsds --split val      # writes docs/results/eval_null_bsds_val.json

``diffcut-gpu eval`` works from cached attention, without the backbone, so its ``dynamic`` cannot be
calibrated (bound 1, i.e. ``logotsu``). This script calibrates the null bound as ``DiffCut`` does (a grey
image and uniform noise through DINOv2-S at both BSDS orientations, their full hierarchies, the smallest
candidate NCut), registers the calibrated policy under ``dynamic-null`` and ``null-bound-only`` for the
runner, and scores them with ``logotsu`` and tau = 0.7 (RW-NCut k = 1, min_size 4, max_depth 8, concept
upsampling, the protocol of docs/results.md). CPU, one thread: about 3 minutes for val once cached.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import environment, write_json
from diffcut_gpu.eval import BSDS500
from diffcut_gpu.eval.runner import BackboneSpec, Method, build_cache, default_cache_dir, evaluate
from diffcut_gpu.spectral import NullBoundThreshold, recursive_ncut, reversibilize
from diffcut_gpu.spectral.null_model import calibrate_null
from diffcut_gpu.spectral.thresholds import register_policy

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--root", default=str(SHARED / "data" / "bsds500"))
    p.add_argument("--model", default=str(SHARED / "models" / "dinov2-small"))
    p.add_argument("--cache-root", default="outputs/cache")
    args = p.parse_args()
    torch.set_num_threads(1)
    spec = BackboneSpec(args.model)
    dataset = BSDS500(args.root, args.split)
    cache_dir = default_cache_dir(spec, args.split, args.cache_root)
    build_cache(dataset, spec, cache_dir, batch_size=4, progress=False)
    backbone = spec.load("cpu")

    def cut(out):
        return recursive_ncut(reversibilize(out.attention), threshold="logotsu", min_size=4, max_depth=8)

    bounds = {f"{h}x{w}": calibrate_null(backbone, cut, h, w) for h, w in ((321, 481), (481, 321))}
    bound = min(bounds.values())
    register_policy("dynamic-null", lambda: NullBoundThreshold(bound))
    register_policy("null-bound-only", lambda: NullBoundThreshold(bound, base=None))
    methods = [Method("rwncut", threshold=t) for t in ("dynamic-null", "logotsu", "null-bound-only", 0.7)]
    start = time.perf_counter()
    result = evaluate(dataset, cache_dir, methods, progress=False)
    for name, row in result.summary.items():
        print(name, {k: round(v, 4) for k, v in row.items()})
    write_json(f"eval_null_bsds_{args.split}.json", {
        "split": args.split, "null_bounds": bounds, "summary": result.summary, "timing": result.timing,
        "seconds": time.perf_counter() - start, "environment": environment(),
    })


if __name__ == "__main__":
    main()
