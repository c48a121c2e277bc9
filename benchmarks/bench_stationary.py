"""Stationary distribution of real attention: mixed-precision GMRES (``stationary_distribution``) vs the
float64 LU solve it replaced as the first path (still its fallback), same chains, side by side.

Inputs: DINOv2-S attention of BSDS500 val images at 32 x 32 tokens (N = 1024, ``benchmarks.real_attention``).
Both answers are checked first (L1 residual of the row-renormalised chain <= 1e-12 in float64). Reported:
least process CPU time per image over repeats, 1 thread, for the whole public call (input checks
included) and for the solve alone.

    python -m benchmarks.bench_stationary        # -> docs/results/bench_stationary.json
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import environment, least_cpu_time, markdown_table, write_json
from benchmarks.real_attention import real_attention
from diffcut_gpu._checks import check_transition
from diffcut_gpu.spectral import graph

LIMIT = 1e-12  # L1 residual both answers must reach


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    P = real_attention(32, 8)
    rows = []
    for dtype in (torch.float32, torch.float64):
        for b in (1, 8):
            q = P[:b].to(dtype).contiguous()
            p64 = q.double()
            inv = 1.0 / p64.sum(-1)
            chain = p64 * inv.unsqueeze(-1)

            new, _ = graph._stationary_gmres(p64, q.float(), inv, LIMIT)  # float64, before the cast to q's dtype
            out = graph.stationary_distribution(q)
            old = graph._stationary_lu(chain, LIMIT, LIMIT, 10_000)
            res_new = float(graph._residual_l1(chain, new).max())
            res_out = float(graph._residual_l1(q.to(out.dtype), out).max())  # in the output's own dtype
            res_old = float(graph._residual_l1(chain, old).max())
            solve_new = least_cpu_time(lambda p64=p64, q=q, inv=inv: graph._stationary_gmres(
                p64, q.float(), inv, LIMIT), args.repeats, warmup=1)[0]
            solve_old = least_cpu_time(lambda chain=chain: graph._stationary_lu(chain, LIMIT, LIMIT, 10_000),
                                       max(2, args.repeats // 3), warmup=1)[0]
            total = least_cpu_time(lambda q=q: graph.stationary_distribution(q), args.repeats, warmup=1)[0]
            checks = least_cpu_time(lambda q=q: check_transition("P", q, min_nodes=1), args.repeats, warmup=1)[0]
            rows.append({"dtype": str(dtype).replace("torch.", ""), "B": b,
                         "gmres_ms_per_image": 1e3 * solve_new / b, "lu_ms_per_image": 1e3 * solve_old / b,
                         "speedup": solve_old / solve_new, "public_call_ms_per_image": 1e3 * total / b,
                         "input_checks_ms_per_image": 1e3 * checks / b,
                         "residual_gmres_float64": res_new, "residual_lu": res_old,
                         "residual_output_own_dtype": res_out})
            print(rows[-1], flush=True)
    print(markdown_table(rows, list(rows[0])))
    env = environment()
    env.update(timer="process_time, least of repeats", inputs="BSDS500 val 1-8, DINOv2-S last 4 layers, N=1024")
    print("wrote", write_json("bench_stationary.json", {"environment": env, "rows": rows}))


if __name__ == "__main__":
    main()
