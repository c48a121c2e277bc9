"""Time per image of the ``dynamic`` policy against a constant tau, side by side, at 1,024 and 4,096 tokens.

    python -m benchmarks.bench_dynamic            # writes docs/results/bench_dynamic.json

One BSDS500 val photo through DINOv2-S at 448x448 (32x32 = 1,024 tokens) and 896x896 (64x64 = 4,096
tokens); the graph ``reversibilize(P)`` is cut by ``recursive_ncut`` with ``threshold=0.5`` (DiffCut's tau),
``threshold=0.7`` (the best constant on BSDS500), the new ``dynamic`` (null bound calibrated through the
backbone, as ``DiffCut`` does; the recursion expands only significant nodes) and the previous default
``logotsu`` (full hierarchy), in turn, on one thread, process CPU time, best of ``--repeats``. The
backbone pass and the calibration are not timed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, write_json
from benchmarks.real_attention import DATA, MODEL
from diffcut_gpu import DiffCut
from diffcut_gpu.io.images import read_image
from diffcut_gpu.spectral import NullBoundThreshold, recursive_ncut

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(MODEL))
    p.add_argument("--image", default=str(DATA / "images" / "val" / "101085.jpg"))
    p.add_argument("--sides", type=int, nargs="+", default=[448, 896])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_dynamic.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rgb = torch.from_numpy(np.asarray(read_image(args.image))).permute(2, 0, 1).float().div(255)
    rows = []
    for side in args.sides:
        model = DiffCut.from_pretrained(args.model, backbone="vit", backbone_kwargs={"resolution": (side, side)})
        image = torch.nn.functional.interpolate(rgb[None], size=(side, side), mode="bilinear", antialias=True)
        image = image.clamp(0, 1)
        out = model.backbone(image)
        W, _ = model.cut.build_graph(out.attention)
        policy = model.policy_for(image)
        assert isinstance(policy, NullBoundThreshold)
        row = {"tokens": W.shape[-1], "null_bound": policy.bound}
        for name, threshold in (("tau=0.5", 0.5), ("tau=0.7", 0.7), ("dynamic", policy), ("logotsu", "logotsu")):
            best, seg = float("inf"), None
            for _ in range(args.repeats):
                start = time.process_time()
                seg = recursive_ncut(W, threshold=threshold)
                best = min(best, time.process_time() - start)
            row[name] = {"seconds": round(best, 3), "segments": int(seg.num_segments[0]), "nodes": seg.num_nodes}
            print(side, name, row[name], flush=True)
        row["dynamic/tau"] = round(row["dynamic"]["seconds"] / row["tau=0.5"]["seconds"], 2)
        rows.append(row)
    write_json(args.out, {"rows": rows, "environment": environment(), "threads": 1, "repeats": args.repeats})


if __name__ == "__main__":
    main()
