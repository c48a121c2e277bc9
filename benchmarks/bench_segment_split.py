"""Where a ``segment`` run spends its time: backbone, spectral stage, the rest.

Runs ``diffcut-gpu segment`` in-process (``diffcut_gpu.cli.main``) on the first ``--images`` BSDS500 val
images with the DINOv2-S backbone on CPU, default settings (threshold ``dynamic``, concept upsampling),
with timers around ``ViTBackbone.forward`` (the backbone) and ``RWNCut.segment`` (the spectral stage:
graph build, recursive cuts, upsampling to pixels). Everything else (decoding, resizing, writing outputs,
model loading) is "rest". The second of two runs is reported. Wall time and process CPU time.

    python -m benchmarks.bench_segment_split                 # --threads auto -> bench_segment_split.json
    python -m benchmarks.bench_segment_split --threads 1
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

from benchmarks.common import environment, markdown_table, write_json
from benchmarks.real_attention import MODEL, val_images
from diffcut_gpu.cli.main import main as cli_main
from diffcut_gpu.models.vit import ViTBackbone
from diffcut_gpu.modules.rwncut import RWNCut

TOTALS = {"backbone": [0.0, 0.0], "spectral": [0.0, 0.0]}


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            TOTALS[name][0] += time.perf_counter() - w
            TOTALS[name][1] += time.process_time() - c
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--threads", default="auto")
    parser.add_argument("--extra", nargs="*", default=[], help="more segment options, e.g. --refine")
    args = parser.parse_args()
    ViTBackbone.forward = timed("backbone", ViTBackbone.forward)
    RWNCut.segment = timed("spectral", RWNCut.segment)
    paths = [str(p) for p in val_images(args.images)]
    with tempfile.TemporaryDirectory() as out:
        argv = ["segment", *paths, "--out", out, "--backbone", "vit", "--model-path", str(MODEL), "--device",
                "cpu", "--threads", args.threads, "-q", *args.extra]
        code = cli_main(argv)  # warm-up (first-touch costs); the second run is measured
        TOTALS["backbone"], TOTALS["spectral"] = [0.0, 0.0], [0.0, 0.0]
        start_w, start_c = time.perf_counter(), time.process_time()
        code = cli_main([*argv, "--overwrite"])
        wall, cpu = time.perf_counter() - start_w, time.process_time() - start_c
    if code != 0:
        raise SystemExit(f"segment exited with {code}")
    rows = []
    for name, (w, c) in TOTALS.items():
        rows.append({"stage": name, "wall_s": w, "cpu_s": c, "wall_share": w / wall, "cpu_share": c / cpu})
    rest_w = wall - sum(t[0] for t in TOTALS.values())
    rest_c = cpu - sum(t[1] for t in TOTALS.values())
    rows.append({"stage": "rest (model load, decode, resize, writes)", "wall_s": rest_w, "cpu_s": rest_c,
                 "wall_share": rest_w / wall, "cpu_share": rest_c / cpu})
    rows.append({"stage": "total (second run)", "wall_s": wall, "cpu_s": cpu, "wall_share": 1.0, "cpu_share": 1.0})
    print(markdown_table(rows, ["stage", "wall_s", "cpu_s", "wall_share", "cpu_share"]))
    env = environment()
    env.update(images=len(paths), argv=" ".join(argv[len(paths) + 1 :]).replace(out, "OUT"))
    name = "bench_segment_split.json" if args.threads == "auto" else f"bench_segment_split_{args.threads}thread.json"
    if args.extra:
        name = name.replace(".json", "_" + "_".join(a.strip("-") for a in args.extra) + ".json")
    print("wrote", write_json(name, {"environment": env, "rows": rows}))


if __name__ == "__main__":
    main()
