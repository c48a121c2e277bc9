"""BSDS500 experiment: choose tau and the dynamic policy on train, report every method on val.

    python -m benchmarks.eval_bsds                  # full run (CPU: the backbone cache takes ~15 min once,
                                                    # the rest ~1-2 h on one core; a GPU does it in minutes)
    python -m benchmarks.eval_bsds --quick          # 8 images per split, seconds once cached

Stages (each reads the backbone outputs cached by ``diffcut_gpu.eval.backbone_cache.build_cache``):

1. train, per graph (RW-NCut on ``reversibilize(P^k)``, k = 1, 2, 4, 8; DiffCut's feature graph): a
   constant-tau grid (one hierarchy per image and graph, re-cut at every tau) and the dynamic policies.
   tau* = the grid value with the best mean of covering and mIoU; the dynamic policy is chosen the same
   way on RW-NCut k = 1.
2. train, RW-NCut k = 1: ``min_size`` / ``max_depth`` and attention layers (last 4 vs last 1).
3. val: every method at its train-chosen setting, k-means with the same segment counts on the same
   attention, DiffCut's own recursion on the feature graph, and the val grid of RW-NCut k = 1 (to
   check the dynamic policy against the best constant tau in hindsight).
4. timing of the stages, a figure of val examples.

Writes docs/results/eval_bsds.json and docs/figures/bsds_examples.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import environment, write_json
from diffcut_gpu.eval import BSDS500
from diffcut_gpu.eval.backbone_cache import BackboneSpec, build_cache, default_cache_dir
from diffcut_gpu.eval.methods import Method
from diffcut_gpu.eval.runner import evaluate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIGURES = ROOT / "docs" / "figures"
POWERS = (1, 2, 4, 8)
GRID = (*(round(0.05 * i, 2) for i in range(1, 20)), 0.975, 0.99, 1.0)  # finer near 1 for large k
POLICIES = ("null", "otsu", "gap", "logotsu", "wotsu", "modularity")
KEYS = ("covering", "pri", "vi", "miou", "pixel_accuracy", "segments", "tau")


def objective(row: dict) -> float:
    """Selection score: mean of covering and Hungarian mIoU (both in [0, 1], higher is better)."""
    return 0.5 * (row["covering"] + row["miou"])


def graphs() -> list[tuple[str, dict]]:
    """(label, Method kwargs) of every graph the experiment cuts with our recursion."""
    return [(f"rwncut k={k}", {"kind": "rwncut", "power": k}) for k in POWERS] + [
        ("features", {"kind": "features"})
    ]


def rounded(row: dict) -> dict:
    return {k: round(float(row[k]), 4) for k in KEYS if k in row} | {"num_images": row["num_images"]}


def cached_split(split: str, spec: BackboneSpec, args) -> tuple[BSDS500, Path, dict]:
    dataset = BSDS500(args.root, split, limit=args.limit)
    cache_dir = default_cache_dir(spec, split, args.cache_root)
    stats = build_cache(dataset, spec, cache_dir, device=args.device, batch_size=4, progress=not args.quiet)
    return dataset, cache_dir, stats


def run_eval(dataset, cache_dir, methods, args, **kw):
    kw.setdefault("min_size", args.min_size)
    kw.setdefault("max_depth", args.max_depth)
    return evaluate(dataset, cache_dir, methods, device=args.device, chunk_size=args.chunk_size,
                    progress=not args.quiet, **kw)


def select_on_train(dataset, cache_dir, args, log) -> tuple[dict, dict, dict]:
    """Stage 1: tau grid and policies per graph; returns (tables, chosen taus, timing)."""
    tables, chosen, timing = {}, {}, {}
    for label, kw in graphs():
        methods = [Method(threshold=t, **kw) for t in (*GRID, *POLICIES)]
        start = time.perf_counter()
        result = run_eval(dataset, cache_dir, methods, args)
        timing[label] = {**result.timing, "wall": time.perf_counter() - start}
        grid = {f"{m.threshold:g}": rounded(result.summary[m.name]) for m in methods[: len(GRID)]}
        policies = {m.threshold: rounded(result.summary[m.name]) for m in methods[len(GRID):]}
        best = max(grid, key=lambda t: objective(grid[t]))
        chosen[label] = float(best)
        tables[label] = {
            "grid": grid,
            "policies": policies,
            "tau_star": float(best),
            "best_covering_tau": float(max(grid, key=lambda t: grid[t]["covering"])),
            "best_miou_tau": float(max(grid, key=lambda t: grid[t]["miou"])),
        }
        log(f"train {label}: tau*={best} {grid[best]} | " + " ".join(
            f"{p}: cov {v['covering']:.3f} mIoU {v['miou']:.3f}" for p, v in policies.items()))
    return tables, chosen, timing


def choose_policy(tables: dict) -> tuple[str, dict]:
    """The dynamic policy with the best objective on train RW-NCut k=1 (ties: the listed order)."""
    rows = tables["rwncut k=1"]["policies"]
    winner = max(POLICIES, key=lambda p: objective(rows[p]))
    return winner, {p: round(objective(rows[p]), 4) for p in POLICIES}


def ablations(dataset, cache_dir, spec: BackboneSpec, tau: float, policy: str, args, log) -> dict:
    """Stage 2 on train: min_size / max_depth, then attention layers, for RW-NCut k=1."""
    methods = [Method("rwncut", threshold=tau), Method("rwncut", threshold=policy)]
    out: dict = {"min_size_max_depth": {}, "layers": {}}
    for min_size, max_depth in ((1, 8), (2, 8), (4, 8), (8, 8), (4, 4), (4, 6), (4, 10)):
        if args.quick and (min_size, max_depth) != (2, 8):
            continue
        result = run_eval(dataset, cache_dir, methods, args, min_size=min_size, max_depth=max_depth)
        key = f"min_size={min_size},max_depth={max_depth}"
        out["min_size_max_depth"][key] = {m.name: rounded(result.summary[m.name]) for m in methods}
        log(f"train ablation {key}: " + " | ".join(
            f"{m.name} cov {result.summary[m.name]['covering']:.3f} mIoU {result.summary[m.name]['miou']:.3f}"
            for m in methods))
    if args.skip_layers:
        return out
    other = BackboneSpec(spec.model_path, layers=(-1,), resolution=spec.resolution)
    _, other_dir, stats = cached_split("train", other, args)
    grid = [Method("rwncut", threshold=t) for t in GRID] + methods[1:]
    result = run_eval(dataset, other_dir, grid, args)
    rows = {f"{m.threshold:g}": rounded(result.summary[m.name]) for m in grid[:-1]}
    best = max(rows, key=lambda t: objective(rows[t]))
    out["layers"]["-1"] = {"tau_star": float(best), "best_constant": rows[best],
                           "dynamic": rounded(result.summary[methods[1].name]), "grid": rows,
                           "cache": stats}
    log(f"train layers (-1,): tau*={best} {rows[best]} | {policy} {out['layers']['-1']['dynamic']}")
    return out


def report_on_val(dataset, cache_dir, chosen: dict, policy: str, args, log):
    """Stage 3: the val table, with the val grid of RW-NCut k=1 for the hindsight check."""
    methods = []
    for k in POWERS:
        tau = chosen[f"rwncut k={k}"]
        methods += [Method("rwncut", threshold=tau, power=k), Method("rwncut", threshold=policy, power=k),
                    Method("kmeans", threshold=tau, power=k)]
    tau_f = chosen["features"]
    tau_1 = chosen["rwncut k=1"]
    methods += [Method("kmeans", threshold=tau_1, on="features"), Method("features", threshold=tau_f),
                Method("features", threshold=policy), Method("diffcut", threshold=tau_f)]
    methods += [Method("rwncut", threshold=p) for p in POLICIES if p != policy]  # all policies, k=1
    main = list(methods)
    methods += [Method("rwncut", threshold=t) for t in GRID if Method("rwncut", threshold=t) not in methods]
    names = [dataset[i]["name"] for i in range(0, len(dataset), max(1, len(dataset) // 4))][:4]
    start = time.perf_counter()
    result = run_eval(dataset, cache_dir, methods, args, examples=names)
    wall = time.perf_counter() - start
    table = {m.name: rounded(result.summary[m.name]) for m in methods}
    for m in main:
        log(f"val {m.name}: {table[m.name]}")
    return table, result, {**result.timing, "wall": wall}


def targets(val: dict, chosen: dict, policy: str) -> dict:
    """Dynamic vs constant (train-chosen and val-best) and RW-NCut vs k-means, relative differences."""
    def rel(a: float, b: float) -> float:
        return round((a - b) / b, 4)

    const = val[Method("rwncut", threshold=chosen["rwncut k=1"]).name]
    dyn = val[Method("rwncut", threshold=policy).name]
    grid = {t: val[Method("rwncut", threshold=t).name] for t in GRID}
    best_cov = max(grid.values(), key=lambda r: r["covering"])
    best_miou = max(grid.values(), key=lambda r: r["miou"])
    best_obj = max(grid, key=lambda t: objective(grid[t]))
    out = {
        "dynamic_vs_train_tau": {"covering": rel(dyn["covering"], const["covering"]),
                                 "miou": rel(dyn["miou"], const["miou"])},
        "dynamic_vs_val_best_tau": {"tau": best_obj,
                                    "covering": rel(dyn["covering"], grid[best_obj]["covering"]),
                                    "miou": rel(dyn["miou"], grid[best_obj]["miou"])},
        "dynamic_vs_val_best_per_metric": {"covering": rel(dyn["covering"], best_cov["covering"]),
                                           "miou": rel(dyn["miou"], best_miou["miou"])},
        "policies_vs_train_tau": {
            p: {"covering": rel(val[Method("rwncut", threshold=p).name]["covering"], const["covering"]),
                "miou": rel(val[Method("rwncut", threshold=p).name]["miou"], const["miou"])}
            for p in POLICIES
        },
        "rwncut_vs_kmeans": {},
    }
    for k in POWERS:
        tau = chosen[f"rwncut k={k}"]
        ours = val[Method("rwncut", threshold=tau, power=k).name]
        theirs = val[Method("kmeans", threshold=tau, power=k).name]
        out["rwncut_vs_kmeans"][f"k={k}"] = {"covering": rel(ours["covering"], theirs["covering"]),
                                             "miou": rel(ours["miou"], theirs["miou"])}
    return out


def backbone_timing(dataset, spec: BackboneSpec, args) -> dict:
    """Seconds per image of the backbone alone (8 images, batches of 4 of one size), after a warm-up."""
    backbone = spec.load(args.device)
    by_size: dict = {}
    for i in range(min(len(dataset), 16)):
        img = dataset[i]["image"]
        by_size.setdefault(tuple(img.shape), []).append(img)
    images = max(by_size.values(), key=len)[:8]
    batch = torch.stack(images[:4]).to(args.device).float() / 255
    backbone(batch)
    start = time.perf_counter()
    for s in range(0, len(images), 4):
        backbone(torch.stack(images[s : s + 4]).to(args.device).float() / 255)
    if torch.device(args.device).type == "cuda":
        torch.cuda.synchronize()
    return {"s_per_image": (time.perf_counter() - start) / len(images), "images": len(images), "batch": 4}


def _row(cells: list) -> str:
    return "| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |"


def _table(head: list[str], rows: list[list]) -> str:
    return "\n".join([_row(head), "|" + "---|" * len(head), *(_row(r) for r in rows)])


def render_markdown(payload: dict) -> str:
    """The tables of docs/results.md from the JSON this script writes."""
    train, val = payload["train"], payload["val"]
    out = ["### Train: constant tau per graph (grid " + f"{GRID[0]}..{GRID[-1]})", ""]
    rows = []
    for label, t in train["graphs"].items():
        best = t["grid"][f"{t['tau_star']:g}"]
        rows.append([label, t["tau_star"], best["covering"], best["miou"], best["pri"], best["vi"],
                     best["segments"], t["best_covering_tau"], t["best_miou_tau"]])
    out += [_table(["graph", "tau*", "covering", "mIoU", "PRI", "VI", "segments", "best-covering tau",
                    "best-mIoU tau"], rows), ""]
    out += ["### Train: dynamic policies (no tuning) vs the best constant tau", ""]
    rows = []
    for label, t in train["graphs"].items():
        best = t["grid"][f"{t['tau_star']:g}"]
        rows.append([label, f"constant tau*={t['tau_star']:g}", best["covering"], best["miou"],
                     objective(best), best["segments"], best["tau"]])
        for name, r in t["policies"].items():
            rows.append([label, name, r["covering"], r["miou"], objective(r), r["segments"], r["tau"]])
    head = ["graph", "threshold", "covering", "mIoU", "(cov+mIoU)/2", "segments", "mean tau"]
    out += [_table(head, rows), ""]
    grid = train["graphs"]["rwncut k=1"]["grid"]
    out += ["### Train: RW-NCut k=1, the tau grid", ""]
    rows = [[t, r["covering"], r["miou"], r["pri"], r["vi"], r["segments"]] for t, r in grid.items()]
    out += [_table(["tau", "covering", "mIoU", "PRI", "VI", "segments"], rows), ""]
    ab = train["ablation"]
    if ab.get("min_size_max_depth"):
        out += ["### Train: min_size / max_depth (RW-NCut k=1)", ""]
        rows = []
        for key, methods in ab["min_size_max_depth"].items():
            for name, r in methods.items():
                rows.append([key, name.split(",")[-1], r["covering"], r["miou"], r["segments"]])
        out += [_table(["setting", "threshold", "covering", "mIoU", "segments"], rows), ""]
    if ab.get("layers"):
        out += ["### Train: attention layers (RW-NCut k=1)", ""]
        base = train["graphs"]["rwncut k=1"]
        best = base["grid"][f"{base['tau_star']:g}"]
        dyn = base["policies"][train["dynamic_policy"]]
        rows = [["last 4 (-4..-1)", base["tau_star"], best["covering"], best["miou"], dyn["covering"],
                 dyn["miou"]]]
        for key, r in ab["layers"].items():
            rows.append([f"last 1 ({key})", r["tau_star"], r["best_constant"]["covering"],
                         r["best_constant"]["miou"], r["dynamic"]["covering"], r["dynamic"]["miou"]])
        out += [_table(["layers", "tau*", "covering", "mIoU", f"{train['dynamic_policy']} covering",
                        f"{train['dynamic_policy']} mIoU"], rows), ""]
    out += ["### Val (100 images): every method at its train-chosen setting", ""]
    rows = [[f"`{name}`", r["covering"], r["pri"], r["vi"], r["miou"], r["pixel_accuracy"], r["segments"]]
            for name, r in val["methods"].items() if not _is_grid_row(name, payload)]
    out += [_table(["method", "covering", "PRI", "VI", "mIoU", "pixel acc.", "segments"], rows), ""]
    out += ["### Val: RW-NCut k=1 tau grid (hindsight only, not used for any choice)", ""]
    rows = [[f"{t:g}", *(val["methods"][Method("rwncut", threshold=t).name][k] for k in
                         ("covering", "miou", "segments"))] for t in GRID]
    out += [_table(["tau", "covering", "mIoU", "segments"], rows), ""]
    return "\n".join(out)


def _is_grid_row(name: str, payload: dict) -> bool:
    chosen = payload["train"]["tau_star"]["rwncut k=1"]
    return name in {Method("rwncut", threshold=t).name for t in GRID} and name != Method(
        "rwncut", threshold=chosen).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(SHARED / "data" / "bsds500"))
    parser.add_argument("--model-path", default=str(SHARED / "models" / "dinov2-small"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-root", default=str(ROOT / "outputs" / "cache"))
    parser.add_argument("--min-size", type=int, default=4)
    parser.add_argument("--max-depth", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--skip-layers", action="store_true", help="skip the last-1-layer cache and ablation")
    parser.add_argument("--quick", action="store_true", help="8 images per split, no JSON")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--report", action="store_true", help="print the markdown tables of the saved JSON")
    args = parser.parse_args(argv)
    if args.report:
        import json

        from benchmarks.common import RESULTS

        print(render_markdown(json.loads((RESULTS / "eval_bsds.json").read_text())))
        return 0
    args.limit = 8 if args.quick else None
    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    spec = BackboneSpec(args.model_path)
    train, train_dir, train_cache = cached_split("train", spec, args)
    val, val_dir, val_cache = cached_split("val", spec, args)
    tables, chosen, train_timing = select_on_train(train, train_dir, args, log)
    policy, scores = choose_policy(tables)
    log(f"dynamic policy chosen on train: {policy} {scores}")
    ablation = ablations(train, train_dir, spec, chosen["rwncut k=1"], policy, args, log)
    val_table, val_result, val_timing = report_on_val(val, val_dir, chosen, policy, args, log)
    checks = targets(val_table, chosen, policy)
    log(f"targets: {checks}")
    payload = {
        "environment": environment(args.device),
        "command": "python -m benchmarks.eval_bsds " + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {"backbone": spec.key(), "min_size": args.min_size, "max_depth": args.max_depth,
                   "upsample": "concept", "selection": "max of (covering + mIoU) / 2 on train",
                   "grid": list(GRID), "policies": list(POLICIES)},
        "train": {"graphs": tables, "tau_star": chosen, "dynamic_policy": policy, "policy_objective": scores,
                  "ablation": ablation},
        "val": {"methods": val_table, "targets": checks},
        "timing": {"backbone": backbone_timing(val, spec, args),
                   "cache": {"train": train_cache, "val": val_cache},
                   "train_eval": train_timing, "val_eval": val_timing},
        "log": lines,
    }
    from diffcut_gpu.eval.figures import plot_examples

    shown = [Method("rwncut", threshold=chosen["rwncut k=1"]), Method("rwncut", threshold=policy),
             Method("rwncut", threshold=chosen["rwncut k=4"], power=4),
             Method("features", threshold=chosen["features"]),
             Method("kmeans", threshold=chosen["rwncut k=1"]),
             Method("diffcut", threshold=chosen["features"])]
    titles = {shown[0].name: f"RW-NCut k=1, tau={chosen['rwncut k=1']:g}",
              shown[1].name: f"RW-NCut k=1, {policy}",
              shown[2].name: f"RW-NCut k=4, tau={chosen['rwncut k=4']:g}",
              shown[3].name: f"features, tau={chosen['features']:g}",
              shown[4].name: "k-means (attention)",
              shown[5].name: f"DiffCut-style, tau={chosen['features']:g}"}
    if args.quick:
        print(render_markdown(payload))
        return 0
    path = write_json("eval_bsds.json", payload)
    fig = plot_examples(val_result.examples, [m.name for m in shown], FIGURES / "bsds_examples.png",
                        titles=titles)
    print(render_markdown(payload))
    print(f"wrote {path} and {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
