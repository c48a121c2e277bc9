"""Fiedler vectors: our solvers against SciPy's ARPACK ``eigsh`` as users call it, side by side.

Graphs: the reversibilized DINOv2-S attention of BSDS500 val images (``benchmarks.real_attention``,
cached), at 32 x 32 tokens (N = 1024) and 64 x 64 tokens (N = 4096), B = 1 and B = 8, float32.
Methods, all at tol 1e-5:

* ``fiedler lanczos``: the batched torch Lanczos (``fiedler(method="lanczos")``);
* ``arpack_fiedler``: ``diffcut_gpu.spectral.arpack`` (ARPACK per graph, float32 products, tuned);
* ``scipy eigsh``: the reference, ``eigsh(k=1, which="LA")`` with ARPACK's defaults on
  D^-1/2 W D^-1/2 with sqrt(d) deflated (moved to -1), one graph at a time, float32 numpy;
* ``torch.linalg.eigh``: dense, N = 1024, B = 1 only (seconds).

Every answer is checked first against a float64 ARPACK solve to tol 1e-12: eigenvalue within 1e-4 and
true residual ||A v - mu v|| <= 1e-5 in float64. Timing: process CPU time (the machine is shared), median
and least of repeats after a warm-up, 1 thread. Results go to ``docs/results/bench_fiedler.json``.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_fiedler    # N=1024, 4096; B=1, 8
    python -m benchmarks.bench_fiedler --quick      # seconds-long smoke run (synthetic graphs), writes nothing
    python -m benchmarks.bench_fiedler --crossover  # eigh vs Lanczos over (B, N): the method="auto" rule
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from benchmarks.common import RESULTS, environment, markdown_table, region_attention, time_it
from benchmarks.real_attention import real_attention
from diffcut_gpu import reversibilize
from diffcut_gpu.spectral.arpack import arpack_fiedler
from diffcut_gpu.spectral.fiedler import EIGH_MAX_N, fiedler

TOL = 1e-5  # residual target of the float32 solvers (the fiedler default)
LAM_ATOL = 1e-4  # allowed |lam - lam_eigh| in float32


def graphs(b: int, grid: int, device: str) -> torch.Tensor:
    """(B, N, N) float32 reversibilized attention-like graphs on a grid x grid token grid."""
    return reversibilize(region_attention(b, grid, grid, seed=grid + b)).float().to(device)


def real_graphs(b: int, grid: int, device: str) -> torch.Tensor:
    """(B, N, N) float32 reversibilized DINOv2-S attention of the first B BSDS500 val images."""
    return reversibilize(real_attention(grid, 8)[:b]).float().to(device)


def reference_lam(W: torch.Tensor) -> torch.Tensor:
    """(B,) float64 Fiedler eigenvalues by float64 ARPACK to tol 1e-12 (dense eigh is minutes at N = 4096)."""
    return arpack_fiedler(W.double().cpu(), tol=1e-12).lam


def eigsh_fiedler(W, tol: float):
    """(lam (B,), v (B, N)) by ARPACK, one graph at a time, on x -> A x - 2 u0 (u0 . x): the scaled dense
    matvec fiedler uses, with u0 moved to eigenvalue -1 so that the largest eigenvalue is the Fiedler one."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    lams, vecs = [], []
    for Wb in W:
        d = Wb.sum(-1)
        s = 1.0 / np.sqrt(d)
        u0 = np.sqrt(d) / np.linalg.norm(np.sqrt(d))

        def matvec(x, Wb=Wb, s=s, u0=u0):
            x = x.ravel()
            return s * (Wb @ (s * x)) - 2 * u0 * (u0 @ x)

        op = LinearOperator(Wb.shape, matvec=matvec, dtype=Wb.dtype)
        v0 = np.cos(np.arange(len(d)) * 0.7).astype(Wb.dtype)  # fixed start vector
        mu, v = eigsh(op, k=1, which="LA", tol=tol, v0=v0)
        lams.append(1 - mu[0])
        vecs.append(v[:, 0])
    return torch.as_tensor(np.array(lams)), torch.as_tensor(np.stack(vecs))


def check(name: str, W: torch.Tensor, lam: torch.Tensor, v: torch.Tensor, lam_ref: torch.Tensor) -> dict:
    """Max |lam - lam_ref| and max float64 residual ||A v - mu v|| (v normalized); raise if off."""
    W, v = W.double().cpu(), v.double().cpu()
    s = W.sum(-1).rsqrt()
    A = s.unsqueeze(-1) * W * s.unsqueeze(-2)
    v = v / v.norm(dim=-1, keepdim=True)
    mu = 1 - lam.double().cpu()
    res = float((torch.bmm(A, v.unsqueeze(-1)).squeeze(-1) - mu.unsqueeze(-1) * v).norm(dim=-1).max())
    err = float((lam.double().cpu() - lam_ref.double().cpu()).abs().max())
    if err > LAM_ATOL or res > 10 * TOL:
        raise AssertionError(f"{name}: wrong answer, |lam - lam_eigh| = {err:.2e}, residual = {res:.2e}")
    return {"max_lam_err": err, "max_residual": res}


def run_case(b: int, grid: int, device: str, repeats: int, with_eigh: bool, real: bool = True) -> list[dict]:
    """Check, then time, Lanczos / arpack_fiedler / eigsh (and eigh) on one (B, grid^2) batch."""
    W = (real_graphs if real else graphs)(b, grid, device)
    sqrt_d = W.sum(-1).sqrt()
    lam_ref = reference_lam(W)
    lz = fiedler(W, method="lanczos", tol=TOL, return_info=True)
    ours = arpack_fiedler(W.cpu(), tol=TOL)
    Wn = W.cpu().numpy()
    lam_sp, v_sp = eigsh_fiedler(Wn, TOL)
    answers = {
        "fiedler lanczos": (check("lanczos", W, lz.lam, lz.x * sqrt_d, lam_ref), lz.iterations.tolist()),
        "arpack_fiedler": (check("arpack_fiedler", W, ours.lam, ours.x * sqrt_d.cpu(), lam_ref),
                           ours.iterations.tolist()),
        "scipy eigsh": (check("eigsh", W, lam_sp, v_sp, lam_ref), None),
    }
    cpu = time.process_time
    timers = {
        "fiedler lanczos": time_it(lambda: fiedler(W, method="lanczos", tol=TOL, return_info=True),
                                   device=device, repeats=repeats, max_seconds=20.0, clock=cpu),
        "arpack_fiedler": time_it(lambda: arpack_fiedler(W.cpu(), tol=TOL), repeats=repeats, max_seconds=20.0,
                                  clock=cpu),
        "scipy eigsh": time_it(lambda: eigsh_fiedler(Wn, TOL), repeats=repeats, max_seconds=20.0, clock=cpu),
    }
    if with_eigh:
        ref = fiedler(W, method="eigh", tol=TOL, return_info=True)
        answers["torch.linalg.eigh"] = (check("eigh", W, ref.lam, ref.x * sqrt_d, lam_ref), None)
        timers["torch.linalg.eigh"] = time_it(lambda: fiedler(W, method="eigh", tol=TOL, return_info=True),
                                              device=device, warmup=0, repeats=1, clock=cpu)
    base = timers["scipy eigsh"]["median_s"]
    rows = []
    for method, (acc, steps) in answers.items():
        t = timers[method]
        steps_txt = "-" if steps is None else f"{min(steps)}-{max(steps)}"
        rows.append({"B": b, "N": grid * grid, "method": method, "ms_per_matrix": 1e3 * t["median_s"] / b,
                     "min_ms_per_matrix": 1e3 * t["min_s"] / b, "median_ms": 1e3 * t["median_s"],
                     "vs_scipy": base / t["median_s"], "steps_or_products": steps_txt, **acc,
                     "repeats": t["repeats"]})
    return rows


def run_crossover(device: str) -> list[dict]:
    """eigh vs Lanczos medians over a (B, N) grid: where ``method="auto"`` should switch."""
    rows = []
    for b in (1, 16, 64):
        for grid in (6, 8, 10, 12, 14, 15, 16, 20):
            W = graphs(b, grid, device)
            ref = fiedler(W, method="eigh", tol=TOL, return_info=True)
            lz = fiedler(W, method="lanczos", tol=TOL, return_info=True)
            check("lanczos", W, lz.lam, lz.x * W.sum(-1).sqrt(), ref.lam)
            e = time_it(lambda W=W: fiedler(W, method="eigh", tol=TOL, return_info=True), device=device,
                        repeats=15, max_seconds=1.0)["median_s"]
            la = time_it(lambda W=W: fiedler(W, method="lanczos", tol=TOL, return_info=True), device=device,
                         repeats=15, max_seconds=1.0)["median_s"]
            n = grid * grid
            rows.append({"B": b, "N": n, "eigh_ms": 1e3 * e, "lanczos_ms": 1e3 * la,
                         "faster": "eigh" if e <= la else "lanczos",
                         "auto_picks": "eigh" if n <= EIGH_MAX_N else "lanczos"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds, writes no JSON")
    parser.add_argument("--crossover", action="store_true", help="eigh vs Lanczos grid for method='auto'")
    parser.add_argument("--device", default="cpu", help="device of the torch solvers (SciPy stays on CPU)")
    args = parser.parse_args()
    env = environment(args.device)
    env.update({k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    env.update(dtype="float32", tol=TOL, timer="time.process_time (process CPU time), median of repeats",
               graphs="synthetic region attention" if args.quick else "DINOv2-S attention, BSDS500 val")
    print(f"{env['device_name']} ({env['device']}), {env['threads']} torch threads, torch {env['torch']}\n")

    if args.crossover:
        key, rows = "crossover", run_crossover(args.device)
        print(markdown_table(rows, ["B", "N", "eigh_ms", "lanczos_ms", "faster", "auto_picks"]))
    else:
        cases = [(1, 16, 3, True), (4, 16, 3, False)] if args.quick else \
            [(1, 32, 15, True), (8, 32, 7, False), (1, 64, 7, False), (8, 64, 3, False)]
        key = "results"
        rows = []
        for b, grid, reps, with_eigh in cases:
            rows += run_case(b, grid, args.device, reps, with_eigh, real=not args.quick)
            print(markdown_table(rows[-4:], ["B", "N", "method", "ms_per_matrix"]), flush=True)
        print(markdown_table(rows, ["B", "N", "method", "ms_per_matrix", "min_ms_per_matrix", "vs_scipy",
                                    "steps_or_products", "max_residual", "max_lam_err"]))
    if args.quick:
        return
    path = RESULTS / "bench_fiedler.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = {"environment": env, "rows": rows}  # --crossover and the default run keep their own section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
