"""Fiedler vectors: batched Lanczos (``fiedler``) against dense ``torch.linalg.eigh`` and SciPy's ARPACK
``eigsh``, on attention-like graphs (``region_attention`` on an h x w token grid, reversibilized).

Every method is checked against the dense eigh answer (eigenvalue and float64 true residual) before it
is timed; timings are medians after a warm-up. Results go to ``docs/results/bench_fiedler.json`` with
the commit, device and versions; a markdown table is printed. SciPy runs one graph at a time on the
CPU, on the same scaled, u0-deflated operator. Pin threads from the shell for comparable numbers:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_fiedler    # N=1024 (B=1, 8), N=4096
    python -m benchmarks.bench_fiedler --quick      # seconds-long smoke run, writes nothing
    python -m benchmarks.bench_fiedler --crossover  # eigh vs Lanczos over (B, N): the method="auto" rule
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from benchmarks.common import RESULTS, environment, markdown_table, region_attention, time_it
from diffcut_gpu import reversibilize
from diffcut_gpu.spectral.fiedler import EIGH_MAX_N, fiedler

TOL = 1e-5  # residual target of the float32 solvers (the fiedler default)
LAM_ATOL = 1e-4  # allowed |lam - lam_eigh| in float32


def graphs(b: int, grid: int, device: str) -> torch.Tensor:
    """(B, N, N) float32 reversibilized attention-like graphs on a grid x grid token grid."""
    return reversibilize(region_attention(b, grid, grid, seed=grid + b)).float().to(device)


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


def run_case(b: int, grid: int, device: str, repeats: int, eigh_repeats: int) -> list[dict]:
    """Check, then time, eigh / Lanczos / eigsh on one (B, grid^2) batch."""
    W = graphs(b, grid, device)
    sqrt_d = W.sum(-1).sqrt()
    ref = fiedler(W, method="eigh", tol=TOL, return_info=True)
    lz = fiedler(W, method="lanczos", tol=TOL, return_info=True)
    Wn = W.cpu().numpy()
    lam_sp, v_sp = eigsh_fiedler(Wn, TOL)
    answers = {
        "torch.linalg.eigh": (check("eigh", W, ref.lam, ref.x * sqrt_d, ref.lam), None),
        "fiedler lanczos": (check("lanczos", W, lz.lam, lz.x * sqrt_d, ref.lam), lz.iterations.tolist()),
        "scipy eigsh": (check("eigsh", W, lam_sp, v_sp, ref.lam), None),
    }
    timers = {
        "torch.linalg.eigh": time_it(lambda: fiedler(W, method="eigh", tol=TOL, return_info=True),
                                     device=device, warmup=0, repeats=eigh_repeats),
        "fiedler lanczos": time_it(lambda: fiedler(W, method="lanczos", tol=TOL, return_info=True),
                                   device=device, repeats=repeats, max_seconds=2.0),
        "scipy eigsh": time_it(lambda: eigsh_fiedler(Wn, TOL), repeats=repeats, max_seconds=2.0),
    }
    base = timers["torch.linalg.eigh"]["median_s"]
    rows = []
    for method, (acc, steps) in answers.items():
        t = timers[method]
        steps_txt = "-" if steps is None else f"{min(steps)}-{max(steps)}"
        rows.append({"B": b, "N": grid * grid, "method": method, "median_ms": 1e3 * t["median_s"],
                     "vs_eigh": base / t["median_s"], "lanczos_steps": steps_txt, **acc,
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
    env.update(dtype="float32", tol=TOL)
    print(f"{env['device_name']} ({env['device']}), {env['threads']} torch threads, torch {env['torch']}\n")

    if args.crossover:
        key, rows = "crossover", run_crossover(args.device)
        print(markdown_table(rows, ["B", "N", "eigh_ms", "lanczos_ms", "faster", "auto_picks"]))
    else:
        cases = [(1, 16, 3, 3), (4, 16, 3, 3), (1, 24, 3, 3)] if args.quick else \
            [(1, 32, 10, 3), (8, 32, 5, 1), (1, 64, 5, 1)]
        key = "results"
        rows = [row for b, grid, reps, eigh_reps in cases
                for row in run_case(b, grid, args.device, reps, eigh_reps)]
        print(markdown_table(rows, ["B", "N", "method", "median_ms", "vs_eigh", "lanczos_steps",
                                    "max_residual", "max_lam_err"]))
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
