"""Shared benchmark plumbing: timing, environment record, JSON output, synthetic attention.

Every benchmark checks correctness before timing, warms up, synchronizes the device inside the timed
region, reports the median of repeats, and writes JSON with the commit, device and versions.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_it(fn: Callable[[], object], *, device: torch.device | str = "cpu", warmup: int = 1,
            repeats: int = 5, max_seconds: float = 60.0, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Median time of ``fn`` in seconds by ``clock`` (wall time by default; ``time.process_time`` for the
    process CPU time, steadier on a shared machine), device synchronized around every call."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    for _ in range(repeats):
        start = clock()
        fn()
        sync(device)
        times.append(clock() - start)
        if time.perf_counter() - start_all > max_seconds:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def least_cpu_time(fn: Callable[[], object], repeats: int, *, warmup: int = 0) -> tuple[float, object]:
    """Least process CPU time (seconds) of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, and
    the last result: the steadiest single number on a shared CPU machine."""
    for _ in range(warmup):
        fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return best, out


def environment(device: torch.device | str = "cpu") -> dict:
    """Commit, device, versions and thread count, recorded next to every result."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).parent).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                    text=True, cwd=Path(__file__).parent).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", True
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "commit": commit + ("-dirty" if dirty else ""),
        "device": str(dev),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_json(name: str, payload: dict, out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    path.write_text(json.dumps(payload, indent=2))
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns``."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def region_attention(b: int, h: int, w: int, *, regions: int = 6, temperature: float = 12.0, seed: int = 0,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Attention-like (B, N, N) on an h x w grid with planted Voronoi regions.

    Token features are a region embedding plus a smooth positional term and noise; attention is the
    softmax of their scaled dot products, so it is row-stochastic, dense and spatially coherent, like
    the self-attention of a real image.
    """
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], -1)
    out = []
    for _ in range(b):
        seeds = torch.rand(regions, 2, generator=g)
        region = torch.cdist(pos, seeds).argmin(-1)
        emb = torch.randn(regions, 32, generator=g)
        feats = emb[region] + 0.6 * torch.randn(h * w, 32, generator=g) + 0.5 * torch.cat([pos, pos], -1).repeat(1, 8)
        feats = torch.nn.functional.normalize(feats, dim=-1)
        out.append(torch.softmax(temperature * feats @ feats.T, -1))
    return torch.stack(out).to(device)
