"""Plots of the benchmark JSON files in docs/results/ -> PNGs in docs/figures/.

    python -m benchmarks.plot
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import RESULTS

FIGURES = RESULTS.parent / "figures"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    """Lay out, write ``out`` as a PNG and free the figure."""
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    _pyplot().close(fig)
    return out


def plot_fiedler(data: dict, out: Path) -> Path:
    """Per-matrix solve time of each method, grouped by (B, N), log scale."""
    plt = _pyplot()
    rows = data["results"]["rows"] if "results" in data else data["rows"]
    groups = sorted({(r["N"], r["B"]) for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 3, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        xs, ys = [], []
        for g, (n, b) in enumerate(groups):
            hit = [r for r in rows if r["method"] == method and (r["N"], r["B"]) == (n, b)]
            if hit:
                xs.append(g + i * width)
                ys.append(hit[0]["median_ms"] / b)
        ax.bar(xs, ys, width, label=method)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [f"N={n}\nB={b}" for n, b in groups])
    ax.set_yscale("log")
    ax.set_ylabel("ms per matrix (median)")
    env = data["results"]["environment"] if "results" in data else data["environment"]
    ax.set_title(f"Fiedler vector, {env['device_name']} ({env['device']}, {env['threads']} threads)")
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_recursive(data: dict, out: Path) -> Path:
    """Whole recursive segmentation of a batch: ours vs DiffCut-style, seconds per batch."""
    plt = _pyplot()
    rows = data["results"]
    labels = [f"B={r['batch']}\n{r['tokens']} tokens" for r in rows]
    fig, ax = plt.subplots(figsize=(2.2 * len(rows) + 2, 4))
    xs = range(len(rows))
    baseline = [r["diffcut_style_s"] for r in rows]
    ax.bar([x - 0.2 for x in xs], baseline, 0.4, label="DiffCut-style (eigh + 100 thresholds)")
    ax.bar([x + 0.2 for x in xs], [r["ours_s"] for r in rows], 0.4, label="diffcut-gpu (batched, level-synchronous)")
    for x, r in zip(xs, rows):
        ax.text(x + 0.2, r["ours_s"], f"{r['speedup']:.1f}x", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per batch (median)")
    env = data["environment"]
    ax.set_title(f"Recursive NCut, {env['device_name']} ({env['device']}, {env['threads']} threads)")
    ax.legend(fontsize=8)
    return _save(fig, out)


def _bars(title: str, labels: list[str], series: dict[str, list[float]], ylabel: str, out: Path,
          log: bool = False) -> Path:
    """Grouped bars: one group per label, one bar per series."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.4 * len(labels) + 3, 4))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(labels))], values, width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(labels))], labels, fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_pamr(data: dict, out: Path) -> Path:
    rows = data["rows"]
    return _bars("PAMR, one BSDS image (1 thread, process CPU time)", [r["image"] for r in rows],
                 {"unfold + einsum (before)": [r["unfold_s"] for r in rows],
                  "shifted multiply-adds (now)": [r["shifted_s"] for r in rows]}, "seconds", out)


def plot_stationary(data: dict, out: Path) -> Path:
    rows = data["rows"]
    return _bars("Stationary distribution, N = 1024 (1 thread, process CPU time)",
                 [f"{r['dtype']} B={r['B']}" for r in rows],
                 {"float64 LU (before)": [r["lu_ms_per_image"] for r in rows],
                  "mixed-precision GMRES (now)": [r["gmres_ms_per_image"] for r in rows],
                  "public call incl. input checks": [r["public_call_ms_per_image"] for r in rows]},
                 "ms per image", out)


def plot_oversubscribed(data: dict, out: Path) -> Path:
    rows = data["rows"]
    loads = sorted({r["hogs"] for r in rows})
    configs = list(dict.fromkeys(r["config"] for r in rows))
    series = {c: [next(r["wall_s"] for r in rows if r["hogs"] == h and r["config"] == c) for h in loads]
              for c in configs}
    return _bars("RWNCut.segment on 8 images, 1024 tokens (wall time)", [f"{h} busy processes" for h in loads],
                 series, "seconds (median)", out)


def plot_syncs(data: dict, out: Path) -> Path:
    """Host reads per ``recursive_ncut`` call (log scale) and CPU seconds, before and after, per batch."""
    plt = _pyplot()
    rows = data["rows"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = range(len(rows))
    series = (("before", "before_syncs"), ("after, CPU policy", "after_syncs"),
              ("after, device policy (GPU)", "after_device_policy_syncs"))
    for i, (label, key) in enumerate(series):
        left.bar([x + 0.27 * i for x in xs], [r[key] for r in rows], 0.27, label=label)
    left.set_yscale("log")
    left.set_ylabel("host reads per call")
    left.legend(fontsize=7)
    for i, (label, key) in enumerate((("before", "before_s"), ("after", "after_s"))):
        right.bar([x + 0.4 * i for x in xs], [r[key] for r in rows], 0.4, label=label)
    right.set_ylabel("CPU seconds per call (1 thread)")
    right.legend(fontsize=7)
    for ax, shift in ((left, 0.27), (right, 0.2)):
        ax.set_xticks([x + shift for x in xs], [f"B={r['batch']}" for r in rows])
    fig.suptitle(f"recursive_ncut, {data['tokens']} tokens, tau {data['tau']}: before ({data['before_revision']}) "
                 "and after", fontsize=9)
    return _save(fig, out)


PLOTTERS = {
    "bench_syncs.json": plot_syncs,
    "bench_pamr.json": plot_pamr,
    "bench_stationary.json": plot_stationary,
    "bench_oversubscribed.json": plot_oversubscribed,
    "bench_fiedler.json": plot_fiedler,
    "bench_recursive.json": plot_recursive,
    "bench_recursive_1thread.json": plot_recursive,
}


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    for name, plotter in PLOTTERS.items():
        path = RESULTS / name
        if path.exists():
            print("wrote", plotter(json.loads(path.read_text()), FIGURES / path.with_suffix(".png").name))


if __name__ == "__main__":
    main()
